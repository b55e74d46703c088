"""Fake cloud identity endpoints on 127.0.0.1 (standard library only), shaped from the public
documents of each:

  GET  /computeMetadata/v1/instance/service-accounts/default/token
       The GCE / GKE / Cloud Run metadata server
       (https://cloud.google.com/compute/docs/access/authenticate-workloads#applications):
       needs `Metadata-Flavor: Google` (else 403), refuses a request with X-Forwarded-For,
       answers {access_token, expires_in, token_type} with `Metadata-Flavor: Google`.
  POST /v1/token
       Google's Security Token Service
       (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token): an RFC 8693
       token exchange, form-encoded: grant_type token-exchange, audience (the pool provider),
       scope, requested_token_type access_token, subject_token, subject_token_type. Answers
       {access_token, issued_token_type, token_type, expires_in}; errors
       {error, error_description} with 400.
  POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken
       IAM Service Account Credentials
       (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken):
       bearer auth with a token the caller may use to impersonate, JSON body {scope [],
       lifetime "Ns", delegates []}; answers {accessToken, expireTime (RFC 3339)}; errors in
       Google's envelope {error: {code, message, status}}.
  GET  /subject
       A URL-sourced subject token (text or JSON {access_token}), with the headers the
       credentials file names required.
  GET  /metadata/identity/oauth2/token
       Azure's instance metadata service, managed identity
       (https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token):
       needs `Metadata: true`, api-version and resource; answers {access_token, expires_in,
       expires_on, not_before, resource, token_type, client_id} with the numbers as strings.
  GET  /msi/token
       App Service's IDENTITY_ENDPOINT
       (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference):
       needs X-IDENTITY-HEADER (the IDENTITY_HEADER secret), api-version 2019-08-01 and
       resource; answers {access_token, expires_on, resource, token_type, client_id}.

Tokens it issues for the API are handed to `register(token, lifetime)` (a provider fake's way
to accept them, e.g. FakeVertex.add_token), except STS's federated tokens when
`federated_valid` is false (then only impersonation's tokens work, as for a pool without
direct resource access). `trust(token)` may accept source tokens issued elsewhere (e.g. an
authorized_user's from fake_vertex's /token) at generateAccessToken.
"""
import base64
import datetime
import os
import time
import urllib.parse

from fake_server import FakeServer, Response

STS_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token",
                 "urn:ietf:params:oauth:token-type:saml2",
                 "urn:ietf:params:aws:token-type:aws4_request")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AZURE_RESOURCE = "https://cognitiveservices.azure.com"


def _tok(prefix):
    return prefix + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")


class FakeAuth(FakeServer):
    name = "auth"

    def __init__(self, register=None, trust=None, **config):
        self.register = register or (lambda tok, life: None)
        self.trust = trust or (lambda tok: False)
        super().__init__(**config)

    def default_config(self):
        return {
            "token_lifetime": 3600.0,
            "audience": "//iam.googleapis.com/projects/123/locations/global/"
                        "workloadIdentityPools/pool/providers/prov",
            "subjects": [],               # subject tokens STS accepts
            "federated_valid": True,      # STS tokens work on the API themselves
            "service_accounts": [],       # emails generateAccessToken knows
            "subject_text": None,         # what GET /subject answers (str or dict)
            "subject_headers": {},        # headers GET /subject needs
            "identity_header": "app-service-identity-secret",
            "azure_client_id": None,      # IMDS: only this user-assigned identity (None: any)
        }

    def reset_state(self):
        with self.lock:
            self.issued = {}   # token -> (kind, expiry)
            self.stats = {"metadata": 0, "sts": 0, "generate": 0, "subject": 0, "imds": 0,
                          "appservice": 0, "refused": 0}
            self.sts_forms = []
            self.generate_bodies = []

    def routes(self):
        self.route("GET", r"/computeMetadata/v1/instance/service-accounts/default/token",
                   self.h_metadata)
        self.route("POST", r"/v1/token", self.h_sts)
        self.route("POST", r"/v1/projects/-/serviceAccounts/(?P<email>[^/:]+):generateAccessToken",
                   self.h_generate)
        self.route("GET", r"/subject", self.h_subject)
        self.route("GET", r"/metadata/identity/oauth2/token", self.h_imds)
        self.route("GET", r"/msi/token", self.h_appservice)

    # --- helpers --------------------------------------------------------------------------
    def _refuse(self, status, body, headers=None):
        with self.lock:
            self.stats["refused"] += 1
        return Response(status, body, headers)

    def _issue(self, kind, register=True):
        tok = _tok({"metadata": "ya29.meta-", "sts": "ya29.sts-", "generate": "ya29.imp-",
                    "imds": "eyJ0eXAiOiJKV1Qi.imds-", "appservice": "eyJ0eXAiOiJKV1Qi.app-"}[kind])
        life = float(self.config["token_lifetime"])
        with self.lock:
            self.issued[tok] = (kind, time.time() + life)
            self.stats[kind] += 1
        if register:
            self.register(tok, life)
        return tok, life

    def valid(self, tok, kinds):
        with self.lock:
            k = self.issued.get(tok)
        return (k is not None and k[0] in kinds and time.time() < k[1]) or self.trust(tok)

    def tokens(self, kind):
        with self.lock:
            return [t for t, (k, _) in self.issued.items() if k == kind]

    def google_error(self, code, message, status):
        return {"error": {"code": code, "message": message, "status": status}}

    # --- Google ---------------------------------------------------------------------------
    def h_metadata(self, req):
        if req.headers.get("Metadata-Flavor") != "Google" or req.headers.get("X-Forwarded-For"):
            return self._refuse(403, b"Missing required header: Metadata-Flavor: Google\n",
                                {"Content-Type": "text/html"})
        tok, life = self._issue("metadata")
        return Response(200, {"access_token": tok, "expires_in": int(life),
                              "token_type": "Bearer"}, {"Metadata-Flavor": "Google"})

    def h_sts(self, req):
        if "application/x-www-form-urlencoded" not in (req.headers.get("Content-Type") or ""):
            return self._refuse(400, {"error": "invalid_request",
                                      "error_description": "Invalid Content-Type"})
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(req.body.decode(),
                                                            keep_blank_values=True).items()}
        with self.lock:
            self.sts_forms.append({k: v for k, v in form.items() if k != "subject_token"})
        if form.get("grant_type") != STS_GRANT:
            return self._refuse(400, {"error": "unsupported_grant_type",
                                      "error_description": "Invalid grant_type"})
        if form.get("requested_token_type") != ACCESS_TYPE:
            return self._refuse(400, {"error": "invalid_request",
                                      "error_description": "Invalid requested_token_type"})
        if form.get("subject_token_type") not in SUBJECT_TYPES:
            return self._refuse(400, {"error": "invalid_request",
                                      "error_description": "Invalid subject_token_type"})
        if form.get("audience") != self.config["audience"]:
            return self._refuse(400, {"error": "invalid_target",
                                      "error_description": "The target service indicated by "
                                      "the \"audience\" parameters is invalid."})
        if SCOPE not in (form.get("scope") or "").split():
            return self._refuse(400, {"error": "invalid_scope",
                                      "error_description": "Invalid scope"})
        if form.get("subject_token") not in self.config["subjects"]:
            return self._refuse(400, {"error": "invalid_grant",
                                      "error_description": "The subject token is invalid."})
        tok, life = self._issue("sts", register=self.config["federated_valid"])
        return Response(200, {"access_token": tok, "issued_token_type": ACCESS_TYPE,
                              "token_type": "Bearer", "expires_in": int(life)})

    def h_generate(self, req):
        auth = req.headers.get("Authorization") or ""
        tok = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not self.valid(tok, ("sts", "metadata")):
            req.drain()
            return self._refuse(401, self.google_error(
                401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"))
        email = urllib.parse.unquote(req.match.group("email"))
        try:
            body = req.json()
        except ValueError:
            return self._refuse(400, self.google_error(400, "Invalid JSON payload received.",
                                                       "INVALID_ARGUMENT"))
        with self.lock:
            self.generate_bodies.append(dict(body, email=email))
        if email not in self.config["service_accounts"]:
            return self._refuse(403, self.google_error(
                403, "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or "
                "it may not exist).", "PERMISSION_DENIED"))
        if not isinstance(body.get("scope"), list) or not body["scope"]:
            return self._refuse(400, self.google_error(400, "Scope required.",
                                                       "INVALID_ARGUMENT"))
        life = body.get("lifetime", "3600s")
        if not (isinstance(life, str) and life.endswith("s") and 0 < float(life[:-1]) <= 43200):
            return self._refuse(400, self.google_error(400, "Invalid lifetime.",
                                                       "INVALID_ARGUMENT"))
        tok, lifetime = self._issue("generate")
        exp = datetime.datetime.fromtimestamp(time.time() + lifetime, datetime.timezone.utc)
        return Response(200, {"accessToken": tok,
                              "expireTime": exp.strftime("%Y-%m-%dT%H:%M:%SZ")})

    def h_subject(self, req):
        for k, v in self.config["subject_headers"].items():
            if req.headers.get(k) != v:
                return self._refuse(401, b"missing header\n")
        with self.lock:
            self.stats["subject"] += 1
        body = self.config["subject_text"]
        return Response(200, body if body is not None else b"")

    # --- Azure ----------------------------------------------------------------------------
    def _azure_answer(self, kind, req, full):
        tok, life = self._issue(kind)
        now = int(time.time())
        body = {"access_token": tok, "expires_on": str(now + int(life)),
                "resource": req.query.get("resource"), "token_type": "Bearer",
                "client_id": req.query.get("client_id") or "00000000-0000-0000-0000-000000000001"}
        if full:
            body.update({"refresh_token": "", "expires_in": str(int(life)),
                         "ext_expires_in": str(int(life)), "not_before": str(now)})
        return Response(200, body)

    def h_imds(self, req):
        if (req.headers.get("Metadata") or "").lower() != "true":
            return self._refuse(400, {"error": "invalid_request",
                                      "error_description": "Required metadata header not "
                                      "specified"})
        if not req.query.get("api-version"):
            return self._refuse(400, {"error": "invalid_request",
                                      "error_description": "Required query variable "
                                      "'api-version' is missing"})
        if req.query.get("resource") != AZURE_RESOURCE:
            return self._refuse(400, {"error": "invalid_resource",
                                      "error_description": "AADSTS500011: The resource "
                                      "principal was not found"})
        cid = self.config["azure_client_id"]
        if cid and req.query.get("client_id") != cid:
            return self._refuse(400, {"error": "invalid_request",
                                      "error_description": "Identity not found"})
        return self._azure_answer("imds", req, True)

    def h_appservice(self, req):
        if req.headers.get("X-IDENTITY-HEADER") != self.config["identity_header"]:
            return self._refuse(401, {"statusCode": 401, "message": "Unauthorized"})
        if req.query.get("api-version") != "2019-08-01" or \
                req.query.get("resource") != AZURE_RESOURCE:
            return self._refuse(400, {"statusCode": 400, "message": "Bad request"})
        return self._azure_answer("appservice", req, False)
