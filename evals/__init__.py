"""Evaluations of the platform's methods on real data (`msp eval ...`): the only code outside
a service that imports a service's internals."""
