"""One call to the Flink JobManager's REST API, with the timeout setting and errors that say where it looked.

In the core so that both the job operations (``machinewatch.jobs``) and pipeline health use the same call.
"""

from __future__ import annotations

from typing import Any

import requests

from machinewatch.config import Settings


def rest(settings: Settings, method: str, path: str, **kwargs: Any) -> requests.Response:
    """One call to the JobManager's REST API, waiting at most MW_FLINK_REST_TIMEOUT_S for the answer.

    Transport failures stay requests exceptions (callers catch RequestException) but say where the
    JobManager was looked for and, for a timeout, which setting to raise.
    """
    url = f"{settings.flink_rest}{path}"
    timeout = settings.flink_rest_timeout_s
    try:
        return requests.request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout as exc:
        msg = (f"the Flink JobManager at {settings.flink_rest} did not answer {method} {path} within {timeout:g} s; "
               f"raise MW_FLINK_REST_TIMEOUT_S (now {timeout:g}) if it is busy")
        raise requests.Timeout(msg, request=exc.request) from exc
    except requests.ConnectionError as exc:
        msg = (f"cannot reach the Flink JobManager at {settings.flink_rest} ({type(exc).__name__}): is the stack "
               "running ('machinewatch stack status')? A remote cluster is named by MW_FLINK_REST_ADDRESS")
        raise requests.ConnectionError(msg, request=exc.request) from exc
