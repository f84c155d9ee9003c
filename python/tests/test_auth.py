"""Credentials: where a token is found, and what a broker that checks them
answers to a missing or wrong one (secure brokers only: today's broker
without --auth_dir has no auth, and those tests skip)."""
import os

import pytest

import dexec
from dexec import credentials
import tasks_mod as t


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DEXEC_TOKEN", raising=False)
    monkeypatch.delenv("DEXEC_TOKEN_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_token_is_found_in_the_documented_order(clean_env, monkeypatch):
    d = clean_env
    assert credentials.find_token() == (None, None)
    os.makedirs(d / "dexec-data")
    (d / "dexec-data" / "client.token").write_text("from-default\nignored\n")
    assert credentials.find_token()[0] == "from-default"
    (d / "f.token").write_text("  from-env-file \n")
    monkeypatch.setenv("DEXEC_TOKEN_FILE", str(d / "f.token"))
    assert credentials.find_token()[0] == "from-env-file"
    monkeypatch.setenv("DEXEC_TOKEN", "from-env")
    assert credentials.find_token()[0] == "from-env"
    (d / "arg.token").write_text("from-arg-file")
    assert credentials.find_token(token_file=str(d / "arg.token"))[0] == \
        "from-arg-file"
    assert credentials.find_token(token="explicit")[0] == "explicit"


def test_unreadable_token_file_is_an_auth_error(clean_env):
    with pytest.raises(dexec.AuthError, match="nope.token"):
        credentials.find_token(token_file=str(clean_env / "nope.token"))


def test_unreachable_broker_fails_fast_with_its_address(clean_env):
    with pytest.raises(dexec.BrokerUnavailable, match="127.0.0.1:1"):
        dexec.Executor("127.0.0.1:1", connect_timeout=0.3)


@pytest.fixture
def secure_broker(procs):
    b = procs.broker(in_memory=True)
    if not b.secure:
        pytest.skip("this dexec-broker has no auth (no client.token in its "
                    "--auth_dir): secure by default has not landed")
    return b


def test_missing_token_is_refused_with_where_to_put_one(secure_broker,
                                                        clean_env):
    with pytest.raises(dexec.AuthError) as info:
        dexec.Executor(secure_broker.grpc)
    assert isinstance(info.value, PermissionError)
    assert "DEXEC_TOKEN" in str(info.value)


def test_wrong_token_is_refused(secure_broker, clean_env):
    with pytest.raises(dexec.AuthError, match="refused the token"):
        dexec.Executor(secure_broker.grpc, token="not-the-token")


def test_right_token_and_curve_worker_run_a_job(secure_broker, procs):
    procs.worker(secure_broker)
    with secure_broker.executor() as ex:
        assert ex.submit(t.square, 9).result(20) == 81
