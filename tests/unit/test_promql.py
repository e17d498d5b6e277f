"""A Prometheus rule's expression as words to search runbooks by: what it watches, not its grammar."""

from urllib.parse import urlencode

from services.packet.kb.promql import expression_of, expression_terms


def test_metric_names_and_label_values_are_kept_and_the_grammar_dropped() -> None:
    expr = (
        "# a comment that must not count\n"
        'sum by (namespace, pod) (rate(kube_pod_container_status_restarts_total{job="kube-state-metrics",'
        ' container!~".*"}[15m])) * 60 * 5 > 0 and on (pod) max_over_time(up[1h30m]) == 0'
    )
    assert expression_terms(expr) == "kube_pod_container_status_restarts_total kube-state-metrics up"


def test_a_bare_metric_and_aggregations_without_parentheses_after_their_name() -> None:
    assert expression_terms("up == 0") == "up"
    assert expression_terms('min without (instance) (node_load1{cluster="eu"}) > 4') == "node_load1 eu"
    assert expression_terms('count_values("version", build_info)') == "version build_info"
    assert expression_terms("") == ""


def test_the_expression_comes_from_a_prometheus_graph_link_only() -> None:
    expr = 'rate(http_requests_total{code=~"5.."}[5m]) > 1'
    link = f"http://prometheus.test:9090/graph?{urlencode({'g0.expr': expr, 'g0.tab': '1'})}"
    assert expression_of(link) == expr
    assert expression_of("https://rmm.test/alerts/42?id=7") is None
    assert expression_of("http://prometheus.test/graph?g0.expr=") is None
    assert expression_of(None) is None and expression_of("") is None


def test_a_hash_in_a_label_value_is_not_a_comment() -> None:
    assert expression_terms('queue_depth{queue="jobs#1"} > 5 # alert when deep') == "queue_depth jobs#1"


def test_what_an_expression_repeats_counts_once() -> None:
    expr = (
        'rate(errors_total{job="api"}[5m]) / rate(requests_total{job="api"}[5m])'
        ' > 0.1 and rate(requests_total{job="api"}[5m]) > 1'
    )
    assert expression_terms(expr) == "errors_total api requests_total"
