#!/bin/sh
# The image's entrypoint: its command names the process (docs/deploy.md, "Containers").
#   web      gunicorn on $WEB_BIND (default 0.0.0.0:8000)
#   worker   a Celery worker; SIGTERM (podman/docker stop) is a warm shutdown: the tasks in
#            hand finish, the rest stay in Redis for the next worker
#   beat     Celery beat: exactly one in the whole deployment
#   migrate  the one-off job before a new release's web and workers start
#   manage   any other manage.py command, e.g. `manage create_api_token alice`
# Anything else runs as given. Arguments after the process name are passed on.
# Each process replaces this shell (exec), so it is PID 1 and gets the stop signal itself.
set -eu

# Containers share nothing but the database, the broker and these settings: without them
# each would make its own SQLite file, file broker and keys in its own $PORTAL_VAR_DIR.
require_settings() {
    missing=""
    for name in DATABASE_URL REDIS_URL SECRET_KEY FIELD_ENCRYPTION_KEYS; do
        eval "value=\${$name:-} file=\${${name}_FILE:-}"
        if [ -z "$value" ] && [ -z "$file" ]; then
            missing="$missing $name"
        fi
    done
    if [ -n "$missing" ]; then
        echo "entrypoint: set$missing (or NAME_FILE): see docs/deploy.md, \"Containers\"" >&2
        exit 64
    fi
}

command="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$command" in
    web)
        require_settings
        exec gunicorn portal.wsgi --bind "${WEB_BIND:-0.0.0.0:8000}" \
            --workers "${WEB_WORKERS:-4}" --threads "${WEB_THREADS:-4}" --timeout 60 \
            --access-logfile - --error-logfile - "$@"
        ;;
    worker)
        require_settings
        # A pool of threads: a transfer mostly waits (for AWS, for the rate limiter's next
        # token), and a waiting thread is cheap where a waiting process is not. One worker
        # per core; more threads per worker for higher rates (docs/deploy.md "Sizing").
        exec celery -A portal worker --loglevel "${LOG_LEVEL:-INFO}" \
            --pool threads --concurrency "${WORKER_CONCURRENCY:-8}" "$@"
        ;;
    beat)
        require_settings
        exec celery -A portal beat --loglevel "${LOG_LEVEL:-INFO}" "$@"
        ;;
    migrate)
        require_settings
        exec python manage.py migrate --noinput "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
