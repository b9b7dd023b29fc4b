"""The team server's pieces that need no server: the CA and certificate, the readers' rule,
the password rule, and how a refusal is worded."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
import time

import pytest
from cryptography import x509

from duration.cli.main import refused, server_failed
from duration.errors import DurationError
from duration.server import front, team, tls, tracking_server
from duration.server.auth_app import _accounts, _writes
from duration.server.users import check_password
from duration.settings import Paths, Settings, Tracking


def test_the_ca_is_made_once_and_the_certificate_names_its_hosts(tmp_path):
    first = tls.ensure(tmp_path, ["10.1.2.3", "127.0.0.1", "localhost"])
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()
    for key in (first.ca_key, first.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    parsed = x509.load_pem_x509_certificate(cert)
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [ipaddress.ip_address(a) for a in ("10.1.2.3", "127.0.0.1")]
    assert san.get_values_for_type(x509.IPAddress) == ips
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ca_cert = x509.load_pem_x509_certificate(ca)
    parsed.verify_directly_issued_by(ca_cert)  # signed by the project's CA
    assert tls.ensure(tmp_path, ["10.1.2.3", "127.0.0.1", "localhost"]).cert.read_bytes() == cert
    again = tls.ensure(tmp_path, ["127.0.0.1", "localhost"])  # other names: issued again
    assert again.cert.read_bytes() != cert and again.ca.read_bytes() == ca  # the CA stays
    # near its end: issued again
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=tls.SERVER_DAYS - 10)
    tls.ensure(tmp_path, ["127.0.0.1", "localhost"], now=past, force=True)
    renewed = tls.ensure(tmp_path, ["127.0.0.1", "localhost"])
    end = x509.load_pem_x509_certificate(renewed.cert.read_bytes()).not_valid_after_utc
    assert end - dt.datetime.now(dt.UTC) > dt.timedelta(days=tls.SERVER_DAYS - 1)


@pytest.mark.parametrize(
    ("method", "path", "writes"),
    [
        ("GET", "/api/2.0/mlflow/experiments/get-by-name", False),
        ("POST", "/api/2.0/mlflow/runs/search", False),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", False),
        ("POST", "/api/2.0/mlflow/experiments/create", True),
        ("POST", "/api/2.0/mlflow/registered-models/create", True),
        ("PATCH", "/api/2.0/mlflow/registered-models/update", True),
        ("DELETE", "/api/2.0/mlflow/registered-models/alias", True),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/x/model.ubj", True),
        ("POST", "/api/2.0/mlflow/runs/search-and-delete", True),
        ("POST", "/api/2.0/mlflow/registered-models/get-latest-versions", False),
        ("POST", "/api/2.0/mlflow/runs/log-batch", True),
    ],
)
def test_a_reader_may_send_reads_and_searches_only(method, path, writes):
    assert _writes(method, path, lambda: b"") is writes


def gql(query: str) -> bytes:
    return json.dumps({"query": query, "variables": {}}).encode()


@pytest.mark.parametrize(
    ("body", "writes"),
    [
        (
            gql(
                "query GetRun($data: MlflowGetRunInput!) "
                "{ mlflowGetRun(input: $data) { run { info { runId } } } }"
            ),
            False,
        ),
        (
            gql('{ mlflowSearchRuns(input: {experimentIds: ["1"]}) { runs { info { runId } } } }'),
            False,
        ),
        (gql('mutation M { mlflowDeleteRun(input: {runId: "x"}) { __typename } }'), True),
        (gql("query A { a } mutation B { b }"), True),
        (b"not json", True),
        (gql("query {"), True),  # not a document: it may be anything
    ],
)
def test_a_graphql_query_reads_and_a_mutation_writes(body, writes):
    assert _writes("POST", "/graphql", lambda: body) is writes


@pytest.mark.parametrize(
    ("path", "admins_only"),
    [
        ("/api/3.0/mlflow/users/permissions/grant", True),
        ("/ajax-api/3.0/mlflow/users/permissions/grant", True),
        ("/api/2.0/mlflow/users/create", True),
        ("/ajax-api/2.0/mlflow/users/update-admin", True),
        ("/api/2.0/mlflow/users/update-password", True),
        ("/api/3.0/mlflow/roles/create", True),
        ("/ajax-api/3.0/mlflow/roles/permissions/add", True),
        ("/api/3.0/mlflow/roles/list", True),
        ("/api/3.0/mlflow/users/roles/list", True),
        ("/api/2.0/mlflow/users/list", True),
        ("/api/2.0/mlflow/users/current", False),
        ("/ajax-api/3.0/mlflow/users/current/permissions", False),
        ("/api/2.0/mlflow/experiments/search", False),
        ("/api/2.0/mlflow/registered-models/get", False),
    ],
)
def test_users_roles_and_permissions_are_for_admins(path, admins_only):
    assert _accounts(path) is admins_only


def test_the_password_rule():
    check_password("alice", "a-long-enough-one")
    for weak in ("short-pass", "alice-is-long-enough", "ALICEalice123456"):
        with pytest.raises(DurationError, match="at least 12 characters"):
            check_password("alice", weak)


def test_a_refusal_names_what_was_refused_and_what_to_do(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    mlflows = Exception(
        "API request to endpoint /api/2.0/mlflow/runs/create failed with "
        "error code 403 != 200. Response body: 'Permission denied'"
    )
    line = refused(mlflows)
    assert "bob" in line and "/api/2.0/mlflow/runs/create" in line and "EDIT" in line
    assert "duration users role bob editor" in line
    ours = Exception(
        "PERMISSION_DENIED: PERMISSION_DENIED: bob has READ only (role reader), and "
        "POST /x writes: that needs EDIT"
    )
    assert refused(ours).startswith("bob has READ only")
    assert "401" in refused(Exception("failed with error code 401 != 200"))
    assert refused(Exception("something else")) is None


def test_the_secrets_are_0600_and_the_config_holds_no_password_in_a_uri(tmp_path):
    s = Settings(paths=Paths(home=tmp_path), tracking=Tracking(port=5999))
    env = team.server_env(s, f"sqlite:///{tmp_path / 'mlflow.db'}")
    f = team.files(s)
    ini = f.ini.read_text()
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(f.ini.resolve())
    assert f"database_uri = sqlite:///{tmp_path.resolve() / 'mlflow-auth.db'}" in ini
    assert f"admin_password = {f.admin_password.read_text().strip()}" in ini
    for path in (f.ini, f.admin_password, f.flask_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.folder.stat().st_mode) == 0o700
    assert team.server_env(s, f"sqlite:///{tmp_path / 'mlflow.db'}") == env  # made once
    with pytest.raises(DurationError, match="not an IP address"):
        front.check_host(s.but({}, tracking={"team_host": "my-laptop"}))


def test_the_servers_own_reason_is_read_from_its_log(tmp_path, monkeypatch):
    s = Settings(paths=Paths(home=tmp_path))
    log = s.paths.state / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        'INFO: "PUT /api/2.0/mlflow-artifacts/artifacts/1/a/model.ubj" 500\n'
        "OSError: [Errno 28] No space left on device\n"
    )
    assert "no space left on device on the tracking server's artifact store" in (
        tracking_server.failure_reason(s)
    )
    log.write_text(
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection "
        'failed: connection to server at "127.0.0.1", port 5432 failed\n'
    )
    assert "cannot reach its database" in tracking_server.failure_reason(s)
    assert tracking_server.failure_reason(s, now=time.time() + 3600) is None  # an old line
    log.write_text('INFO: "GET /health" 200\n')
    assert tracking_server.failure_reason(s) is None
    # a client's failed request, worded with the reason of the server in its home
    log.write_text("OSError: [Errno 28] No space left on device\n")
    monkeypatch.setenv("DURATION_HOME", str(tmp_path))
    e = Exception(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed "
        "with exception: too many 500 error responses"
    )
    assert server_failed(e).startswith("the tracking server failed a request: no space left")
    assert server_failed(Exception("a local problem")) is None
