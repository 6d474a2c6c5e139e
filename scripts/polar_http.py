"""The few Polar API calls the operator scripts make (status, smoke), with the standard
library only. The token is sent as a bearer token and never printed."""

import json
import os
import urllib.error
import urllib.request

DEFAULT_API_URL = "https://api.polar.sh/v1"  # the function's own default (README, Configuration)
SANDBOX_API_URL = "https://sandbox-api.polar.sh/v1"
TIMEOUT_SECONDS = 10


class Polar:
    def __init__(self, api_url, token):
        self.api_url = api_url.rstrip("/")
        self.token = token

    @classmethod
    def from_env(cls, default_url=DEFAULT_API_URL):
        """(Polar or None, notes): None, with the reason in notes, when the token is missing."""
        notes = []
        url = os.environ.get("POLAR_API_URL", "").strip()
        if not url:
            notes.append(f"POLAR_API_URL is not set: using {default_url}")
            url = default_url
        token = os.environ.get("POLAR_ACCESS_TOKEN", "").strip()
        if not token:
            notes.append("POLAR_ACCESS_TOKEN is not set: Polar was not asked")
            return None, url, notes
        return cls(url, token), url, notes

    def request(self, method, path, body=None):
        """(status, parsed JSON body or None, raw text). Network failures raise OSError."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api_url}{path}", data=data, method=method,
            headers={
                "authorization": f"Bearer {self.token}",
                "accept": "application/json",
                "content-type": "application/json",
                "user-agent": "polar-discount-sync-ops/1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                status, text = response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return status, parsed, text

    def get_discount(self, discount_id):
        """{"state": "found", "discount": {...}} | {"state": "deleted"} | {"state": "error", ...}."""
        try:
            status, body, text = self.request("GET", f"/discounts/{discount_id}")
        except OSError as err:
            return {"state": "error", "error": f"request failed: {err}"}
        if status == 200 and isinstance(body, dict):
            return {"state": "found", "discount": body}
        if status == 404 and isinstance(body, dict) and body.get("error") == "ResourceNotFound":
            return {"state": "deleted"}
        hint = {
            401: "the token is invalid or revoked (sandbox and production tokens are separate)",
            403: "the token lacks the discounts:read scope",
            404: "not Polar's ResourceNotFound: check POLAR_API_URL (…/v1)",
            429: "rate limited",
        }.get(status, "unexpected answer")
        return {"state": "error", "status": status, "error": f"HTTP {status}: {hint}", "body": text[:300]}
