import pytest

from libs.common.settings import ServiceSettings, SettingsError, load_settings


def test_kafka_bootstrap_servers_is_read_from_the_conventional_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    assert load_settings(ServiceSettings).kafka_bootstrap_servers == "127.0.0.1:29092"


def test_sqlite_is_refused_in_prod_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSP_ENVIRONMENT", "prod")
    with pytest.raises(SettingsError) as exc:
        load_settings(ServiceSettings)
    assert "MSP_DATABASE_URL must name a PostgreSQL database in prod" in str(exc.value)


def test_bad_values_fail_at_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSP_HTTP_PORT", "99999")
    with pytest.raises(SettingsError) as exc:
        load_settings(ServiceSettings)
    assert "MSP_HTTP_PORT" in str(exc.value)


def test_empty_bootstrap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", " ")
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS"):
        load_settings(ServiceSettings)


def test_embedded_default_is_one_sqlite_file_per_service(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = ServiceSettings(service_name="audit", var_dir=tmp_path)
    assert s.effective_database_url == f"sqlite:///{tmp_path}/db/audit.db"
    assert s.effective_consumer_group == "msp-audit"


def test_prod_refuses_to_start_without_a_key_for_credentials_at_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSP_ENVIRONMENT", "prod")
    monkeypatch.setenv("MSP_DATABASE_URL", "postgresql+psycopg://msp@db/msp")
    monkeypatch.setenv("MSP_ADMIN_TOKEN", "a" * 40)
    with pytest.raises(SettingsError, match="MSP_SECRETS_KEY"):
        load_settings(ServiceSettings)
