"""The team server, for real: MLflow's basic auth behind nginx's TLS on loopback, users and
roles made through the CLI, and the `mlflow` client and the `duration` CLI as its clients."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import ssl
import stat
import time
import uuid
from collections.abc import Iterator

import mlflow
import psutil
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmarks.support.browser import chromium
from duration.automate import life as automate
from duration.errors import DurationError
from duration.infra import nginx
from duration.infra.net import free_port
from duration.server import front, pg_databases, team, tls, tracking_server, users
from duration.settings import Automate, Paths, Settings, Tracking
from duration.tracking.names import MODEL_NAME
from tests.helpers import assert_one_line_error, cli_env, invoke, run_cli, spawn

pytestmark = pytest.mark.xdist_group("team")
LOGIN_ATTEMPTS, LOGIN_LOCK_S = 5, 3.0  # the throttle, made quick for the tests


@pytest.fixture(scope="module")
def team_home(tmp_path_factory, settings, nginx, postgres_cluster) -> Iterator[Settings]:
    """A team server of its own on the PostgreSQL store (its auth database beside it), with
    an editor alice, a second editor carol, and a reader bob."""
    home = tmp_path_factory.mktemp("team")
    _, db = postgres_cluster
    database = f"team_{uuid.uuid4().hex[:8]}"  # a store of its own in the shared cluster
    store = db.uri.rsplit("/", 1)[0] + f"/{database}"
    s = Settings(
        paths=Paths(home=home, data_dir=settings.paths.data, tlc_url=settings.paths.tlc_url),
        tracking=Tracking(
            port=free_port(),
            team_port=free_port(),
            store_uri=store,
            login_attempts=LOGIN_ATTEMPTS,
            login_lock_s=LOGIN_LOCK_S,
        ),
        automate=Automate(port=free_port(), poll_s=1),
    )
    saved = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = db.pgpass  # how the server and its clients reach the cluster
    pg_databases.ensure_database(s, store, database)
    team.start(s)
    try:
        for name, role in (("alice", "editor"), ("carol", "editor"), ("bob", "reader")):
            users.add(s, name, role)
        yield s
    finally:
        team.stop(s)
        tracking_server.stop(s)
        os.environ.pop("PGPASSFILE") if saved is None else os.environ.update(PGPASSFILE=saved)


def password(s: Settings, user: str) -> str:
    return team.files(s).password(user).read_text().strip()


def as_user(s: Settings, user: str | None, **extra: str) -> dict:
    """A client's environment: the https URL, the CA, and `user`'s credentials."""
    creds = (
        {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password(s, user)}
        if user
        else {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None}
    )
    given = {
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(s.paths.tls / "ca.pem"),
        "DURATION_HOME": str(s.paths.home),
        **creds,
        **extra,
    }
    return cli_env(s, front.team_url(s), **given)


def client_as(s: Settings, user: str, monkeypatch) -> MlflowClient:
    for k, v in as_user(s, user).items():
        monkeypatch.setenv(k, v) if v is not None else monkeypatch.delenv(k, raising=False)
    return MlflowClient(front.team_url(s))


def test_anonymous_gets_401_plain_http_is_redirected_and_every_secret_is_0600(team_home):
    s, ca = team_home, str(team_home.paths.tls / "ca.pem")
    url = front.team_url(s)
    assert requests.get(f"{url}/health", verify=ca, timeout=10).status_code == 200
    r = requests.get(f"{url}/api/2.0/mlflow/experiments/search", verify=ca, timeout=10)
    assert r.status_code == 401
    r = requests.get(
        f"{url}/api/2.0/mlflow/experiments/search",
        verify=ca,
        timeout=10,
        auth=("alice", "not-her-password"),
    )
    assert r.status_code == 401
    plain = requests.get(url.replace("https", "http"), allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    f = team.files(s)
    keys = [s.paths.tls / "ca-key.pem", s.paths.tls / "server-key.pem"]
    secrets = [f.admin_password, f.flask_key, f.ini, *keys, f.password("alice"), f.password("bob")]
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # no secret on a command line or in a log
    words = [p.read_text().strip() for p in (f.admin_password, f.flask_key, f.password("alice"))]
    pid = int((s.paths.state / "server.pid").read_text())
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    lines = " ".join(" ".join(p.cmdline()) for p in procs)
    logs = "".join(p.read_text(errors="replace") for p in s.paths.state.rglob("*.log"))
    assert not any(w in lines or w in logs for w in words)
    assert "127.0.0.1" in lines and "0.0.0.0" not in lines  # MLflow stays on loopback


def test_a_wrong_ca_another_name_or_an_expired_certificate_is_refused(team_home):
    s = team_home
    port = s.tracking.team_port
    proc = invoke("runs", "reap", env=as_user(s, "alice", MLFLOW_TRACKING_SERVER_CERT_PATH=None))
    assert_one_line_error(proc, "certificate", "MLFLOW_TRACKING_SERVER_CERT_PATH", "ca.pem")
    ctx = ssl.create_default_context(cafile=str(s.paths.tls / "ca.pem"))
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch|doesn't match"),
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
    ):
        ctx.wrap_socket(raw, server_hostname="mlflow.example.org")
    # an expired certificate: one line naming the CA file; the next start issues a new one
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    tls.ensure(s.paths.tls, ["127.0.0.1", "localhost"], now=past, days=1, force=True)
    nginx.stop(front.folder(s))
    nginx.start(front.folder(s), port)
    try:
        proc = invoke("runs", "reap", env=as_user(s, "alice"))
        assert_one_line_error(proc, "expired", "ca.pem")
    finally:
        front.start(s)
    assert invoke("runs", "reap", env=as_user(s, "alice")).returncode == 0


def test_a_reader_reads_and_every_write_is_refused(team_home, vectorized, monkeypatch):
    s = team_home
    alice = client_as(s, "alice", monkeypatch)
    exp = alice.create_experiment(f"alice-{uuid.uuid4().hex[:6]}")
    run = alice.create_run(exp)
    model = f"team-{uuid.uuid4().hex[:6]}"
    alice.create_registered_model(model)
    bob = client_as(s, "bob", monkeypatch)
    assert bob.get_experiment(exp).name.startswith("alice-")  # READ on what others made
    assert bob.get_run(run.info.run_id).info.run_id == run.info.run_id
    assert bob.get_registered_model(model).name == model
    assert bob.get_latest_versions(model) == []  # a POST that only reads
    writes = [
        lambda: bob.create_experiment(f"bob-{uuid.uuid4().hex[:6]}"),
        lambda: bob.create_registered_model(f"bob-{uuid.uuid4().hex[:6]}"),
        lambda: bob.create_run(exp),
        lambda: bob.log_param(run.info.run_id, "x", "1"),
        lambda: bob.set_registered_model_tag(model, "k", "v"),
        lambda: bob.delete_experiment(exp),
    ]
    for write in writes:
        with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
            write()
    before = len(alice.search_experiments())
    proc = invoke("tune", "--trials", "1", "--max-rounds", "5", env=as_user(s, "bob"))
    assert_one_line_error(proc, "bob", "READ", "EDIT", "duration users role bob editor")
    alice = client_as(s, "alice", monkeypatch)
    assert len(alice.search_experiments()) == before  # nothing was made, not even half
    assert alice.get_experiment(exp).lifecycle_stage == "active"
    proc = invoke("runs", "reap", env=as_user(s, None))
    assert_one_line_error(proc, "wants a user", "MLFLOW_TRACKING_USERNAME")
    alice.set_terminated(run.info.run_id)


def test_an_admin_manages_users_and_each_refusal_is_one_line(team_home, monkeypatch):
    s = team_home
    home = {"DURATION_HOME": str(s.paths.home), "MLFLOW_PORT": str(s.tracking.port)}
    proc = invoke("users", "add", "dave", "--role", "reader", env=home)
    assert proc.returncode == 0 and "0600" in proc.stdout, proc.stderr
    assert_one_line_error(invoke("users", "add", "dave", env=home), "exists already")
    assert_one_line_error(invoke("users", "remove", "zed", env=home), "no user 'zed'")
    assert_one_line_error(invoke("users", "remove", "admin", env=home), "admin")
    assert_one_line_error(invoke("users", "role", "dave", "boss", env=home), "not a role")
    assert_one_line_error(invoke("users", "add", "no/slash", env=home), "not a user name")
    assert_one_line_error(
        invoke("users", "add", "eve", "--role", "boss", env=home), "--role 'boss' is not a role"
    )
    assert_one_line_error(invoke("users", "passwd", "admin", env=home), "keeps its generated")
    empty = run_cli("users", "add", "erin", "--password-stdin", env=home, input="")
    assert_one_line_error(empty, "--password-stdin read nothing")
    weak = run_cli("users", "add", "erin", "--password-stdin", env=home, input="short-pass\n")
    assert_one_line_error(weak, "too weak", "12 characters")
    assert "erin" not in [u.name for u in users.users(s)]
    # a role change is a permission change
    assert invoke("users", "role", "dave", "editor", env=home).returncode == 0
    client_as(s, "dave", monkeypatch).create_experiment(f"dave-{uuid.uuid4().hex[:6]}")
    assert invoke("users", "role", "dave", "reader", env=home).returncode == 0
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
        client_as(s, "dave", monkeypatch).create_experiment(f"dave-{uuid.uuid4().hex[:6]}")
    old = password(s, "dave")
    assert invoke("users", "passwd", "dave", env=home).returncode == 0
    ca = str(s.paths.tls / "ca.pem")
    search = f"{front.team_url(s)}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, auth=("dave", old), verify=ca, timeout=10).status_code == 401
    assert (
        requests.get(search, auth=("dave", password(s, "dave")), verify=ca, timeout=10).status_code
        == 200
    )
    assert invoke("users", "remove", "dave", env=home).returncode == 0
    assert not team.files(s).password("dave").exists()
    # binding beyond loopback needs auth and TLS; a taken TLS port is refused before anything
    assert_one_line_error(invoke("server", "start", "--host", "0.0.0.0", env=home), "--team")
    other = {
        "DURATION_HOME": str(s.paths.home / "other"),
        "MLFLOW_PORT": str(free_port()),
        "DURATION_TEAM_PORT": str(s.tracking.team_port),
    }
    assert_one_line_error(invoke("server", "start", "--team", env=other), "is taken")
    assert not (s.paths.home / "other" / ".mlflow" / "server.pid").exists()
    # its PostgreSQL not running: one line that says how to start it, nothing started
    nowhere = f"postgresql://duration@127.0.0.1:{free_port()}/mlflow"
    down = {**other, "DURATION_TEAM_PORT": str(free_port()), "MLFLOW_BACKEND_STORE_URI": nowhere}
    assert_one_line_error(invoke("server", "start", "--team", env=down), "duration db start")
    assert not (s.paths.home / "other" / ".mlflow" / "server.pid").exists()


def test_two_editors_pipelines_at_once_end_with_one_production(team_home, vectorized, monkeypatch):
    s = team_home
    args = ["pipeline", "--trials", "2", "--max-rounds", "20", "--baselines", "none"]
    procs = [spawn(args, as_user(s, user)) for user in ("alice", "carol")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    client = client_as(s, "bob", monkeypatch)  # and a reader sees it all
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert len(versions) == 2 and [v.current_stage for v in versions].count("Production") == 1
    prod = next(v for v in versions if v.current_stage == "Production")
    assert client.get_registered_model(MODEL_NAME).aliases["production"] == prod.version
    ours = [e.experiment_id for e in client.search_experiments() if e.name.startswith("nyc-")]
    runs = client.search_runs(ours)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    # the reader's promote, cycle and deploy: one line, and the registry as it was
    for args in (("promote",), ("cycle", "--month", "2021-04", "--trials", "1"), ("deploy",)):
        proc = invoke(*args, env=as_user(s, "bob"))
        assert_one_line_error(proc, "bob", "READ", "EDIT", "duration users role bob editor")
    after = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [(v.version, v.current_stage) for v in after] == [
        (v.version, v.current_stage) for v in versions
    ]


def test_no_team_server_or_a_plain_one_in_the_way_is_one_line(tmp_path, mlflow_server, nginx):
    home = {"DURATION_HOME": str(tmp_path / "none")}
    assert_one_line_error(
        invoke("users", "list", env=home),
        "no team server was set up",
        "duration server start --team",
    )
    # a plain server (the session's) answers on the team server's MLflow port: refused, and it
    # keeps running
    port = mlflow_server.rsplit(":", 1)[1]
    env = {
        "DURATION_HOME": str(tmp_path / "plain"),
        "MLFLOW_PORT": port,
        "DURATION_TEAM_PORT": str(free_port()),
    }
    assert_one_line_error(
        invoke("server", "start", "--team", env=env),
        "a tracking server without authentication answers",
    )
    assert requests.get(f"{mlflow_server}/health", timeout=10).status_code == 200


def call(s: Settings, user: str, path: str, secret: str | None = None, **kw) -> requests.Response:
    """One request to the team server through its TLS front, as `user`."""
    ca = str(s.paths.tls / "ca.pem")
    auth = (user, secret if secret is not None else password(s, user))
    return requests.request(
        kw.pop("method", "POST"),
        f"{front.team_url(s)}{path}",
        auth=auth,
        verify=ca,
        timeout=30,
        **kw,
    )


def roles_of(s: Settings) -> dict:
    """Every user's roles and every role's grants, as the admin sees them."""
    listed = team.call(s, "GET", "/api/3.0/mlflow/roles/list", params={"workspace": "default"})
    people = team.call(s, "GET", "/api/2.0/mlflow/users/list")["users"]
    return {"roles": listed["roles"], "users": people}


def test_an_editor_cannot_grant_and_a_reader_reads_through_graphql(team_home, monkeypatch):
    s = team_home
    model = f"grant-{uuid.uuid4().hex[:6]}"
    client_as(s, "alice", monkeypatch).create_registered_model(model)
    before = roles_of(s)
    grant = {
        "username": "bob",
        "resource_type": "registered_model",
        "resource_id": model,
        "permission": "MANAGE",
    }
    asked = [
        ("/api/3.0/mlflow/users/permissions/grant", grant),
        ("/ajax-api/3.0/mlflow/users/permissions/grant", grant),
        ("/api/3.0/mlflow/roles/create", {"name": "sneaky", "workspace": "default"}),
        ("/api/3.0/mlflow/roles/assign", {"username": "bob", "role_id": 1}),
        ("/api/2.0/mlflow/users/create", {"username": "mallory", "password": "x" * 16}),
        ("/api/2.0/mlflow/users/update-admin", {"username": "alice", "is_admin": True}),
    ]
    for path, body in asked:
        r = call(s, "alice", path, json=body)
        assert r.status_code == 403, (path, r.text)  # ours, or MLflow's own where it is first
        if path.endswith("/grant"):  # MLflow lets an editor with MANAGE grant: ours says no
            assert "not an admin" in r.json()["message"], (path, r.text)
    for path in ("/api/2.0/mlflow/users/list", "/api/3.0/mlflow/roles/list"):
        assert call(s, "alice", path, method="GET").status_code == 403
    assert call(s, "bob", "/api/2.0/mlflow/users/current", method="GET").status_code == 200
    assert roles_of(s) == before  # nothing changed
    query = '{ mlflowGetExperiment(input: {experimentId: "0"}) { experiment { name } } }'
    r = call(s, "bob", "/graphql", json={"query": query})
    assert r.status_code == 200 and r.json()["data"]["mlflowGetExperiment"]["experiment"], r.text
    mutation = 'mutation { mlflowDeleteExperiment(input: {experimentId: "0"}) { __typename } }'
    r = call(s, "bob", "/graphql", json={"query": mutation})
    assert r.status_code == 403 and "has READ only" in r.json()["message"]


def test_guessing_a_password_is_slowed_and_the_right_one_gets_in_after(team_home):
    s = team_home
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    codes = [
        call(s, "carol", search, "wrong-" * 3, method="GET").status_code
        for _ in range(LOGIN_ATTEMPTS + 1)
    ]  # fmt: skip - the tries, as a list
    assert codes == [401] * LOGIN_ATTEMPTS + [429]
    locked = call(s, "carol", search, method="GET")  # even the right one waits out the lock
    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= LOGIN_LOCK_S
    assert "duration users unlock carol" in locked.json()["message"]
    # from another address (the front sees 127.0.0.2), carol still gets in
    with requests.Session() as other:
        other.mount("https://", SourceAddress("127.0.0.2"))
        r = other.get(f"{front.team_url(s)}{search}", auth=("carol", password(s, "carol")),
                      verify=str(s.paths.tls / "ca.pem"), timeout=30)  # fmt: skip
        assert r.status_code == 200
    # straight to MLflow's port, a forged X-Forwarded-For is not believed
    direct = requests.get(
        f"{s.tracking.local_uri}{search}",
        auth=("carol", password(s, "carol")),
        headers={"X-Forwarded-For": "10.9.9.9"},
        timeout=30,
    )  # fmt: skip - one request
    assert direct.status_code == 429
    time.sleep(LOGIN_LOCK_S + 0.5)
    assert call(s, "carol", search, method="GET").status_code == 200  # the lock has passed
    log = (s.paths.state / "server.log").read_text()
    assert "too many wrong passwords for carol from 127.0.0.1" in log
    # locked again, then an admin unlocks at once
    for _ in range(LOGIN_ATTEMPTS):
        call(s, "carol", search, "wrong-" * 3, method="GET")
    assert call(s, "carol", search, method="GET").status_code == 429
    home = {"DURATION_HOME": str(s.paths.home), "MLFLOW_PORT": str(s.tracking.port)}
    proc = invoke("users", "unlock", "carol", env=home)
    assert proc.returncode == 0 and "cleared" in proc.stdout, proc.stderr
    assert call(s, "carol", search, method="GET").status_code == 200


def test_the_front_sends_hsts(team_home):
    r = call(team_home, "alice", "/health", method="GET")
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_a_reader_opens_a_run_and_a_model_in_the_ui_with_no_error(team_home, monkeypatch):
    """Headless Chromium as bob (a reader): the UI's pages read through GraphQL and the
    ajax API, and nothing it asks for is refused."""
    s = team_home
    alice = client_as(s, "alice", monkeypatch)
    exp = alice.create_experiment(f"ui-{uuid.uuid4().hex[:6]}")
    run = alice.create_run(exp)
    alice.log_metric(run.info.run_id, "rmse", 5.0)
    alice.set_terminated(run.info.run_id)
    model = f"ui-{uuid.uuid4().hex[:6]}"
    alice.create_registered_model(model)
    alice.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id)
    token = base64.b64encode(f"bob:{password(s, 'bob')}".encode()).decode()
    ui = s.tracking.local_uri  # MLflow's own port: the reader's rights, not the TLS, are tested
    with chromium(headers={"Authorization": f"Basic {token}"}) as page:
        page.open(f"{ui}/#/experiments/{exp}/runs/{run.info.run_id}", 8)
        run_page = page.text()
        page.open(f"{ui}/#/models/{model}", 6)
        model_page = page.text()
        errors = page.errors()
        answered = [
            e["params"]["response"]
            for e in page.events
            if e["method"] == "Network.responseReceived"
        ]
    assert run.info.run_id[:8] in run_page or "rmse" in run_page, run_page[:500]
    assert model in model_page and "Version 1" in model_page, model_page[:500]
    assert errors == [], errors
    reads = [r for r in answered if "/graphql" in r["url"] or "/ajax-api/" in r["url"]]
    assert reads and all(r["status"] == 200 for r in reads)  # the UI read, and was let


class SourceAddress(requests.adapters.HTTPAdapter):
    """Connections from another loopback address (127.0.0.2 is as local as 127.0.0.1)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def test_the_orchestrator_works_as_an_editor_on_postgresql_behind_the_front(team_home, monkeypatch):
    """Its account is its own editor (password 0600, never on a command line), its storage
    the project's PostgreSQL, and its UI, which has no login, reaches admins only."""
    s = team_home
    name = f"waiting-{uuid.uuid4().hex[:6]}"  # a model with no Production yet: it waits
    alice = client_as(s, "alice", monkeypatch)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(front.team_url(s))  # what `start` asks about the model, as alice
    try:
        orchestrate_as_an_editor(s, name, alice)
    finally:
        mlflow.set_tracking_uri(before)


def orchestrate_as_an_editor(s: Settings, name: str, alice: MlflowClient) -> None:
    with pytest.raises(DurationError, match=f"no registered model named '{name}'"):
        automate.start(s, name)
    alice.create_registered_model(name)
    st = automate.start(s, name)
    try:
        assert st.running
        assert "postgres_url: postgresql://" in (automate.home(s) / "dagster.yaml").read_text()
        secret_file = team.files(s).password(automate.ORCHESTRATOR)
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        daemon = psutil.Process(automate.daemons(s)[0].pid())
        assert daemon.environ()["MLFLOW_TRACKING_USERNAME"] == automate.ORCHESTRATOR
        secret = secret_file.read_text().strip()
        assert all(secret not in " ".join(d.cmdline()) for d in (daemon, *daemon.children(True)))
        listed = {u.name: u.role for u in users.users(s)}
        assert listed[automate.ORCHESTRATOR] is team.UserRole.editor
        ui = f"{front.team_url(s)}/dagster/server_info"
        ca = str(s.paths.tls / "ca.pem")
        anonymous = requests.get(ui, verify=ca, timeout=30)
        editor = requests.get(ui, verify=ca, timeout=30, auth=("alice", password(s, "alice")))
        admin_pw = team.files(s).admin_password.read_text().strip()
        admin = requests.get(ui, verify=ca, timeout=30, auth=(team.ADMIN, admin_pw))
        assert (anonymous.status_code, editor.status_code, admin.status_code) == (401, 403, 200)
        assert "dagster" in admin.text.lower()
        assert automate.status(s).running  # read from PostgreSQL
    finally:
        automate.stop(s)
    assert automate.status(s).running is False
