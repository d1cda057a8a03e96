"""Settings, read from the environment with strict parsing (see portal/env.py).

Defaults run the whole product on one machine with nothing installed: SQLite and a
filesystem message broker under ./var. Production sets DATABASE_URL and REDIS_URL.
"""

import re
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp import constants as csp

from portal import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.string("PORTAL_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    # One machine without SECRET_KEY: generate once and keep it, so sessions survive a
    # restart. Several web machines must share SECRET_KEY (README, "Scaling out").
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.string("SECRET_KEY", "") or _local_secret_key()


def _local_encryption_key() -> list[str]:
    # As for SECRET_KEY: one machine keeps a generated key; several share FIELD_ENCRYPTION_KEYS.
    path = VAR_DIR / "field_encryption_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return [path.read_text().strip()]


# Secrets stored in the database (webhook signing secrets) are encrypted with these Fernet
# keys (transfers/fields.py): the first encrypts, all decrypt; rotation in docs/deploy.md.
FIELD_ENCRYPTION_KEYS = env.strings("FIELD_ENCRYPTION_KEYS", []) or _local_encryption_key()
DEBUG = env.boolean("DEBUG", False)
ALLOWED_HOSTS = env.strings("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.strings("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env.string("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "knox",  # API tokens, stored as digests (transfers/api/tokens.py)
    "drf_spectacular",
    "django_prometheus",
    "django_otp",
    # Their models hold no devices (migration transfers 0018 moved them into the portal's
    # own, whose secrets are encrypted); installed for that migration and their code.
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "csp",
    "transfers",
    "sso",
    "policies",
    "profiles",
]

MIDDLEWARE = [
    # First and last: django-prometheus times the whole stack.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "portal.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "profiles.middleware.TimezoneMiddleware",  # the user's time zone, from the session
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Pages wait briefly for the shared AWS rate; AWS trouble answers 503, never 500.
    "transfers.middleware.AwsBusyMiddleware",
    # Second factor for approvers and admins, absolute session lifetime.
    "sso.middleware.SessionPolicyMiddleware",
    # Turns a lockout signalled during authenticate() into the "locked" page.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "transfers.context_processors.nav",
            ],
        },
    }
]

_database_url = env.string("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        _database_url,
        # A PostgreSQL connection costs more to open than most pages take to serve
        # (docs/benchmarks.md): keep it for a minute, checked before reuse. SQLite opens a
        # file: per request is fine.
        conn_max_age=env.integer(
            "DATABASE_CONN_MAX_AGE",
            60 if _database_url.startswith(("postgres://", "postgresql://")) else 0,
            minimum=0,
        ),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: wait for locks instead of failing, and take
    # the write lock at BEGIN so two writers never deadlock on an upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# django-axes first: it refuses a locked-out username and address before the password is
# checked (it needs the request, which LoginView passes to authenticate()). Then local
# passwords (Django's check, refused where PASSWORD_LOGIN turns them off) and the identity
# provider (single sign-on, off unless OIDC_ISSUER is set).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "sso.backends.PasswordBackend",
    "sso.backends.ProviderBackend",
]

# Single sign-on through any OpenID Connect provider (sso/, mozilla-django-oidc; settings for
# Okta, Entra ID, Keycloak and IAM Identity Center in docs/deploy.md). The provider's endpoints
# come from OIDC_DISCOVERY_URL (default: the issuer's /.well-known/openid-configuration).
OIDC_ISSUER = env.string("OIDC_ISSUER", "").rstrip("/")
OIDC_DISCOVERY_URL = env.string(
    "OIDC_DISCOVERY_URL",
    f"{OIDC_ISSUER}/.well-known/openid-configuration" if OIDC_ISSUER else "",
)
OIDC_RP_CLIENT_ID = env.string("OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env.string("OIDC_CLIENT_SECRET", "")  # or OIDC_CLIENT_SECRET_FILE
OIDC_RP_SCOPES = env.string("OIDC_SCOPES", "openid email profile")
OIDC_RP_SIGN_ALGO = env.string("OIDC_SIGN_ALGO", "RS256")
OIDC_GROUPS_CLAIM = env.string("OIDC_GROUPS_CLAIM", "groups")
OIDC_USERNAME_CLAIM = env.string("OIDC_USERNAME_CLAIM", "preferred_username")
# The provider's second factor counts when the ID token's amr holds one of OIDC_MFA_AMR, or
# its acr is one of OIDC_MFA_ACR; then the portal's own TOTP is not asked again.
OIDC_MFA_AMR = env.strings("OIDC_MFA_AMR", ["mfa"])
OIDC_MFA_ACR = env.strings("OIDC_MFA_ACR", [])
OIDC_PROVIDER_NAME = env.string("OIDC_PROVIDER_NAME", "your organisation's sign-in")
OIDC_LEEWAY_SECONDS = env.integer("OIDC_LEEWAY_SECONDS", 30, minimum=0)
OIDC_TIMEOUT = env.number("OIDC_TIMEOUT", 10, minimum=0.1)
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = False
if OIDC_ISSUER and not (OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("OIDC_ISSUER needs OIDC_CLIENT_ID and OIDC_CLIENT_SECRET(_FILE)")
if OIDC_RP_SIGN_ALGO not in {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("OIDC_SIGN_ALGO must be an asymmetric JWS algorithm (RS256, ...)")
# PASSWORD_LOGIN=false: local passwords work only for the PASSWORD_LOGIN_USERS (break-glass).
PASSWORD_LOGIN = env.boolean("PASSWORD_LOGIN", True)
PASSWORD_LOGIN_USERS = env.strings("PASSWORD_LOGIN_USERS", [])

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns at start-up when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Security. HTTPS=true in production turns on secure cookies, HSTS and the redirect.
HTTPS = env.boolean("HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Sessions end at browser close, after SESSION_IDLE_SECONDS without a request, and
# SESSION_MAX_SECONDS after login whatever the activity. sso.middleware.SessionPolicyMiddleware
# enforces the maximum and pushes the expiry back at most once a minute (not a write per
# request). Live pages poll only while work is in flight, so an open tab does not keep a
# session alive for long.
SESSION_IDLE_SECONDS = env.integer("SESSION_IDLE_SECONDS", 30 * 60, minimum=120)
SESSION_MAX_SECONDS = env.integer("SESSION_MAX_SECONDS", 8 * 3600, minimum=120)
SESSION_COOKIE_AGE = SESSION_IDLE_SECONDS
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Login throttling (django-axes): LOGIN_FAILURE_LIMIT wrong passwords for one username from
# one address lock that pair for LOGIN_LOCKOUT_MINUTES; a successful login clears the count.
# Behind TRUSTED_PROXY_COUNT reverse proxies the address is read from X-Forwarded-For.
AXES_FAILURE_LIMIT = env.integer("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.integer("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
TRUSTED_PROXY_COUNT = env.integer("TRUSTED_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "sso.middleware.client_ip"

# Second factor (django-otp): approvers and admins enter a TOTP code after the password.
OTP_TOTP_ISSUER = env.string("OTP_TOTP_ISSUER", "Certificate transfer portal")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # the admin never shows a device's secret

# Content-Security-Policy (django-csp): everything from this origin, no inline script or
# style (htmx is vendored under static/ and its indicator styles are off: base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF],
        "style-src": [csp.SELF],
        "img-src": [csp.SELF, "data:"],
        "object-src": [csp.NONE],
        "base-uri": [csp.NONE],
        "form-action": [csp.SELF],
        "frame-ancestors": [csp.NONE],
    }
}

# Celery. Without REDIS_URL the broker is a file-based transport under ./var (portal/broker.py:
# kombu's filesystem transport with atomic publish and claim): no server needed, and the
# worker is still a separate process, as in production. Why not kombu's own: docs/deploy.md.
REDIS_URL = env.string("REDIS_URL", "")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    from portal import broker as _broker

    _broker.use_for_filesystem_urls()
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "work_folder": str(_broker_dir / "work"),
        # The transport polls; at kombu's default of 1 s workers take work too slowly to keep
        # up with an account's API rate (docs/benchmarks-bulk.md, note 1).
        "polling_interval": 0.1,
    }
    for _folder in ("queue", "control", "work"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
# Celery's Django fixup closes a worker's database connections before and after every task
# whatever CONN_MAX_AGE says (celery/celery#4116): on PostgreSQL a new backend for every
# task, 30 a second at 25 transfers a second (bench/regions.py), each a fork and a login.
# With a reuse count it leaves them open, and portal/celery.py closes them as Django does
# after a request: at CONN_MAX_AGE, or when the connection is broken.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
INVENTORY_SYNC_MINUTES = env.integer("INVENTORY_SYNC_MINUTES", 15, minimum=1)
RECONCILE_SECONDS = env.integer("RECONCILE_SECONDS", 60, minimum=5)

# AWS. AWS_ENDPOINT_URL points every client at the stand-in; unset for real AWS.
AWS_ENDPOINT_URL = env.string("AWS_ENDPOINT_URL", "") or None
AWS_RETRY_MODE = env.string("AWS_RETRY_MODE", "standard")
AWS_MAX_ATTEMPTS = env.integer("AWS_MAX_ATTEMPTS", 3, minimum=1)
AWS_CONNECT_TIMEOUT = env.number("AWS_CONNECT_TIMEOUT", 5, minimum=0.1)
AWS_READ_TIMEOUT = env.number("AWS_READ_TIMEOUT", 20, minimum=0.1)
# Each AWS API is held at its own allowance per account and region (transfers.ratelimit:
# AWS's defaults, the adjustable ones read from Service Quotas unless AWS_SERVICE_QUOTAS is
# false, an account's own rates over both); an API AWS's table does not list, at this.
AWS_DEFAULT_API_RATE = env.number("AWS_DEFAULT_API_RATE", 10, minimum=0.1)
AWS_SERVICE_QUOTAS = env.boolean("AWS_SERVICE_QUOTAS", True)
if AWS_RETRY_MODE not in {"standard", "adaptive", "legacy"}:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("AWS_RETRY_MODE must be standard, adaptive or legacy")

# Transfers.
TRANSFER_EXPIRY_DAYS = env.integer("TRANSFER_EXPIRY_DAYS", 14, minimum=1)
TRANSFER_REMINDER_HOURS = env.integer("TRANSFER_REMINDER_HOURS", 48, minimum=1)
TRANSFER_STALL_MINUTES = env.integer("TRANSFER_STALL_MINUTES", 3, minimum=1)
# A worker's lease on a transfer it executes, lands or restores; no other worker takes it
# meanwhile. The worker renews it every third of this while it works (transfers.leases), so
# a killed worker's transfers are handed out again this long after it died.
TRANSFER_LEASE_SECONDS = env.integer("TRANSFER_LEASE_SECONDS", 60, minimum=30)
# DetachThingPrincipal is asynchronous: how long the worker waits for AWS to list no things
# before it sends TransferCertificate (then the transfer fails with a clear message).
TRANSFER_THING_DETACH_WAIT_SECONDS = env.integer(
    "TRANSFER_THING_DETACH_WAIT_SECONDS", 30, minimum=1
)
# The devices (transfers/workflow/devices.py): a job execution IN_PROGRESS longer than
# DEVICE_JOB_TIMEOUT_MINUTES times out in AWS (its timeoutConfig); a transfer whose devices
# have not finished their job after DEVICE_JOB_WAIT_MINUTES is held for an approver; after
# the landing the portal waits DEVICE_BACK_WAIT_MINUTES for the devices to connect to the
# target before it says they are not back.
DEVICE_JOB_TIMEOUT_MINUTES = env.integer("DEVICE_JOB_TIMEOUT_MINUTES", 10, minimum=1)
DEVICE_JOB_WAIT_MINUTES = env.integer("DEVICE_JOB_WAIT_MINUTES", 30, minimum=1)
DEVICE_BACK_WAIT_MINUTES = env.integer("DEVICE_BACK_WAIT_MINUTES", 15, minimum=1)
# How often the beat looks for the devices of landed transfers, and at most how many
# transfers a round (each look one GetThingConnectivityData per thing).
DEVICE_CHECK_SECONDS = env.integer("DEVICE_CHECK_SECONDS", 5, minimum=1)
DEVICE_CHECKS_PER_ROUND = env.integer("DEVICE_CHECKS_PER_ROUND", 50, minimum=1)
# While a device has not finished its job, its transfer asks again this often.
DEVICE_POLL_SECONDS = env.integer("DEVICE_POLL_SECONDS", 3, minimum=1)
# Restores that did not finish are tried again by the sweep with backoff, this many times,
# then shown as needing attention with the steps left and a button to try again.
TRANSFER_RESTORE_TRIES = env.integer("TRANSFER_RESTORE_TRIES", 8, minimum=1)
# How long a web request waits for the shared AWS rate before it answers "AWS is busy".
AWS_INTERACTIVE_WAIT_SECONDS = env.integer("AWS_INTERACTIVE_WAIT_SECONDS", 5, minimum=1)

# Email. The demo writes messages to ./var/mail; production sets EMAIL_HOST and friends.
EMAIL_BACKEND = env.string("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_HOST = env.string("EMAIL_HOST", "localhost")
EMAIL_PORT = env.integer("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env.string("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.string("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.boolean("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env.integer("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env.string("DEFAULT_FROM_EMAIL", "transfer-portal@localhost")

# Webhooks go to public internet addresses only, checked when saved and when sent
# (transfers/outbound.py). true: also loopback and private networks (a receiver inside the
# company's network; the tests' receivers on 127.0.0.1).
WEBHOOK_ALLOW_PRIVATE = env.boolean("WEBHOOK_ALLOW_PRIVATE", False)

# API throttling per token (transfers/api/throttling.py): past the rate, 429 with Retry-After.
# Counted in the "throttle" cache, shared through Redis when REDIS_URL is set.
API_THROTTLE_RATE = env.string("API_THROTTLE_RATE", "300/minute")
if not re.fullmatch(r"[1-9][0-9]*/(second|minute|hour|day)", API_THROTTLE_RATE):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("API_THROTTLE_RATE must read like 300/minute (second, hour, day)")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "transfers.api.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "transfers.api.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    # JSON in only: a form or multipart body is a 415, never silently read as empty.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "transfers.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["transfers.api.throttling.TokenRateThrottle"],
}
# django-rest-knox: `Authorization: Token <token>` as with DRF's tokens before it; a token
# lives until revoked unless issued with an expiry (manage.py create_api_token --days).
REST_KNOX = {"AUTH_HEADER_PREFIX": "Token", "TOKEN_TTL": None, "AUTO_REFRESH": False}
SPECTACULAR_SETTINGS = {
    "TITLE": "Certificate transfer portal API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # One name per set of states, wherever it appears (a filter, a resource, a batch's).
    "ENUM_NAME_OVERRIDES": {
        "CertificateStatusEnum": "transfers.models.Certificate.Status",
        "TransferStatusEnum": "transfers.models.Transfer.Status",
    },
}

# Every record carries the request id (portal/request_id.py), in web and worker alike.
LOG_FORMAT = env.string("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "portal.request_id.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "portal.request_id.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.string("LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
# The worker keeps the handler above instead of installing its own (which has no request id).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Operations: /health/ and /metrics/.
# The beat task "heartbeat" runs every HEARTBEAT_SECONDS; /health/ fails when the last one
# a worker ran is older than HEARTBEAT_MAX_AGE (so beat, broker and a worker all work).
HEARTBEAT_SECONDS = env.integer("HEARTBEAT_SECONDS", 30, minimum=5)
HEARTBEAT_MAX_AGE = env.integer("HEARTBEAT_MAX_AGE", 4 * HEARTBEAT_SECONDS, minimum=10)
# Prometheus scrapes /metrics/ with "Authorization: Bearer <METRICS_TOKEN>"; staff may look
# at it logged in. Empty: staff only. The same token shows /health/'s details.
METRICS_TOKEN = env.string("METRICS_TOKEN", "")

CELERY_BEAT_SCHEDULE = {
    "sync-inventory": {
        "task": "transfers.tasks.sync_all_accounts",
        "schedule": INVENTORY_SYNC_MINUTES * 60.0,
    },
    "check-devices": {
        "task": "transfers.tasks.check_devices_due",
        "schedule": float(DEVICE_CHECK_SECONDS),
        # A round nobody ran in time is overtaken by the next: never a backlog of them.
        "options": {"expires": DEVICE_CHECK_SECONDS},
    },
    "reconcile-transfers": {
        "task": "transfers.tasks.reconcile",
        "schedule": float(RECONCILE_SECONDS),
    },
    "expire-and-remind": {
        "task": "transfers.tasks.expire_and_remind",
        "schedule": 300.0,
    },
    "heartbeat": {
        "task": "transfers.tasks.heartbeat",
        "schedule": float(HEARTBEAT_SECONDS),
        # A heartbeat nobody ran in time says nothing: drop it rather than run it late.
        "options": {"expires": HEARTBEAT_SECONDS},
    },
}
