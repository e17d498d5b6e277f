"""Which failures a handler waits out (a dependency is down, or the producer was renewed) and
which it does not (something is wrong with what it sent)."""

from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    LeaderNotAvailableError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
)

from libs.common.bus import PublishError, unavailable


def test_a_broker_that_forgot_the_producer_is_waited_out_like_one_that_is_down() -> None:
    # After a broker restart an idempotent producer's next batches are refused for good; the
    # producer renews itself and the caller's retry goes out on the new one.
    for exc in (OutOfOrderSequenceNumber(), InvalidProducerEpoch(), LeaderNotAvailableError()):
        assert unavailable(exc)
        assert unavailable(PublishError("not acknowledged", [exc, KafkaConnectionError()]))


def test_a_refusal_of_what_was_sent_is_not_waited_out() -> None:
    assert not unavailable(RecordTooLargeError())
    assert not unavailable(
        PublishError("not acknowledged", [OutOfOrderSequenceNumber(), RecordTooLargeError()])
    )
    assert not unavailable(PublishError("not acknowledged", []))
