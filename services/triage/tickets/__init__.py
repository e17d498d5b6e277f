"""Ticket triage: classification and similar cases (local path)."""
