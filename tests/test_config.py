import stat

from promptgen import create_app


def test_secret_key_created_once_owner_only(tmp_path):
    instance = tmp_path / "instance"

    first = create_app(instance_path=instance).config["SECRET_KEY"]
    second = create_app(instance_path=instance).config["SECRET_KEY"]

    assert first == second
    assert len(first) == 64
    assert stat.S_IMODE((instance / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700


def test_local_mode_without_token(tmp_path):
    config = create_app(instance_path=tmp_path).config

    assert config["REPLICATE_LOCAL"] is True
    assert config["REPLICATE_BASE_URL"] == "http://127.0.0.1:5001"
    assert config["PUBLIC_URL"] == "http://127.0.0.1:5000"
    assert config["QUEUE_DATABASE"] == str(tmp_path / "queue.sqlite3")
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'promptgen.sqlite3'}"


def test_token_selects_replicate_api(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_example")
    monkeypatch.setenv("PORT", "8080")

    config = create_app(instance_path=tmp_path).config

    assert config["REPLICATE_LOCAL"] is False
    assert config["REPLICATE_BASE_URL"] == "https://api.replicate.com"
    assert config["PUBLIC_URL"] == "http://127.0.0.1:8080"


def test_environment_overrides_instance_config(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text('REPLICATE_MODEL = "owner/from-file"\nPUBLIC_URL = "https://a.example/"\n')
    monkeypatch.setenv("REPLICATE_MODEL", "owner/from-environment")

    config = create_app(instance_path=tmp_path).config

    assert config["REPLICATE_MODEL"] == "owner/from-environment"
    assert config["PUBLIC_URL"] == "https://a.example"
