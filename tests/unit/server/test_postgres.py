"""PostgreSQL's reasons, as the project words them: no server."""

from __future__ import annotations

from duration.server import postgres


def test_a_postgres_programs_reason_is_its_fatal_line_and_the_cause_before_it():
    log = (
        '2026-11-30 10:00:00.1 UTC [12] LOG:  invalid value for parameter "shared_buffers"\n'
        "2026-11-30 10:00:00.1 UTC [12] FATAL:  configuration file contains errors\n"
        "2026-11-30 10:00:00.2 UTC [12] LOG:  database system is shut down\n"
    )
    assert postgres.reason(log) == (
        'LOG: invalid value for parameter "shared_buffers" / '
        "FATAL: configuration file contains errors"
    )
    initdb = 'initdb: error: directory "/x" exists but is not empty\ninitdb: hint: remove it\n'
    assert postgres.reason(initdb) == 'initdb: error: directory "/x" exists but is not empty'
    assert postgres.reason("pg_ctl: could not start server\nExamine the log output.\n") == (
        "pg_ctl: could not start server Examine the log output."
    )
    assert postgres.reason("") == "no output"
