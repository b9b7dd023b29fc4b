"""The deployer's plan: the steps from what serves to what the registry's aliases say."""

from __future__ import annotations

import pytest

from duration.ops.converge import Kind, Serving, Step, plan
from duration.registry.aliases import Wanted
from duration.serving.state import Role

C, S = Role.canary, Role.shadow


@pytest.mark.parametrize(
    ("want", "now", "steps"),
    [
        (Wanted(production="1"), Serving(production="1"), []),
        (Wanted(production="2"), Serving(production=None), []),  # serving is a person's
        (Wanted(production="2"), Serving(production="1"), [Step(kind=Kind.deploy, version="2")]),
        (
            Wanted(production="1", candidate=C, candidate_version="2", weight=30),
            Serving(production="1"),
            [Step(kind=Kind.start_arm, version="2", role=C, weight=30)],
        ),
        (  # the canary's weight tag changed: the arm starts again with it
            Wanted(production="1", candidate=C, candidate_version="2", weight=50),
            Serving(production="1", candidate=C, candidate_version="2", weight=30),
            [Step(kind=Kind.start_arm, version="2", role=C, weight=50)],
        ),
        (
            Wanted(production="1"),
            Serving(production="1", candidate=S, candidate_version="2", weight=100),
            [Step(kind=Kind.abort, version="2", role=S)],
        ),
        (  # the candidate became Production: it finishes
            Wanted(production="2"),
            Serving(production="1", candidate=C, candidate_version="2", weight=20),
            [Step(kind=Kind.finish, version="2", role=C)],
        ),
        (  # Production moved elsewhere with a candidate serving: deploy, then the new arm
            Wanted(production="3", candidate=S, candidate_version="4", weight=100),
            Serving(production="1", candidate=C, candidate_version="2", weight=20),
            [
                Step(kind=Kind.deploy, version="3", role=C),
                Step(kind=Kind.start_arm, version="4", role=S, weight=100),
            ],
        ),
        (  # a candidate alias on Production's own version is no candidate
            Wanted(production="2", candidate=C, candidate_version="2", weight=20),
            Serving(production="2"),
            [],
        ),
    ],
)
def test_the_plan_takes_serving_to_the_aliases(want, now, steps):
    assert plan(want, now) == steps


def test_each_step_says_what_it_does():
    assert Step(kind=Kind.start_arm, version="2", role=C, weight=30).said() == (
        "serve v2 as a canary for 30% of clients"
    )
    assert Step(kind=Kind.abort, version="2", role=S).said() == "take the shadow v2 out"
