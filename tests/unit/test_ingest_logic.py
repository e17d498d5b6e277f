import base64
import hashlib
import hmac

from services.ingest.ratelimit import RateLimiter, retry_after_header
from services.ingest.tenants import signing_secret, verify_hmac_sha1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_is_per_tenant_and_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_eps=10, burst=20, clock=clock)
    assert limiter.take("acme", 20) == 0
    wait = limiter.take("acme", 5)
    assert 0.4 < wait <= 0.5 and retry_after_header(wait) == "1"
    assert limiter.take("globex", 20) == 0  # another tenant has its own bucket
    clock.now = 0.5
    assert limiter.take("acme", 5) == 0


def test_a_batch_larger_than_the_burst_passes_once_the_bucket_is_full() -> None:
    limiter = RateLimiter(rate_eps=10, burst=20, clock=Clock())
    assert limiter.take("acme", 1000) == 0
    assert limiter.take("acme", 1) > 0


def test_hmac_sha1_signature_in_base64_hex_or_prefixed_form() -> None:
    body, secret = b'{"Action":"Update"}', "s3cret"
    mac = hmac.new(secret.encode(), body, hashlib.sha1).digest()
    for presented in (base64.b64encode(mac).decode(), "sha1=" + base64.b64encode(mac).decode(), mac.hex()):
        assert verify_hmac_sha1(secret, body, presented)
    assert not verify_hmac_sha1(secret, body + b" ", base64.b64encode(mac).decode())
    assert not verify_hmac_sha1("other", body, base64.b64encode(mac).decode())
    assert not verify_hmac_sha1(secret, body, None)


def test_signing_secrets_differ_per_key_and_per_server() -> None:
    assert signing_secret("pepper-a", "k1") == signing_secret("pepper-a", "k1")
    assert signing_secret("pepper-a", "k1") != signing_secret("pepper-a", "k2")
    assert signing_secret("pepper-a", "k1") != signing_secret("pepper-b", "k1")
