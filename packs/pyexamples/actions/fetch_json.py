from st2common.runners.base_action import Action
from squall_st2 import http


class FetchJson(Action):
    """GET a URL; fail on an error status, else return the status and the
    body parsed as JSON."""

    def run(self, url, request_timeout):
        response = http.get(url, headers={"accept": "application/json"}, timeout=request_timeout)
        if not response.ok:
            return (False, {"status": response.status_code, "body": response.text})
        return {"status": response.status_code, "body": response.json()}
