"""schemathesis against the live OpenAPI schema, as each role: no request, valid or not, gets a
5xx, and every answer (its status code included) is one the schema documents."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import login

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

# The stream never ends and logout would end the session the run uses.
EXCLUDED = {("GET", "/api/v1/stream"), ("POST", "/api/v1/auth/logout")}
EXAMPLES = 3  # per operation, mode and role: seconds, not minutes
ROLES = ("admin", "mgr_a", "disp_a", "tech_a", "safety_u1", "maker_m1", "reg_j1")


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("username", ROLES)
def test_no_operation_answers_with_a_server_error_or_off_its_schema(running_api, username):
    import httpx

    with httpx.Client(base_url=running_api.url) as client:
        headers = login(client, username)
    schema = schemathesis.openapi.from_url(f"{running_api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    checked = []
    for operation in operations:
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(
                headers=headers,
                timeout=15,
                checks=[
                    not_a_server_error,
                    response_schema_conformance,
                    status_code_conformance,
                ],
            )

        run()
        checked.append(operation.label)
    assert len(checked) >= 15, checked
