"""Real Django's login() and logout() as an oracle for sessctl's user features (sessctl never imports Django).

    python tests/django_login_peer.py --db URL --secret KEY [--table NAME] login --user PK [--cookie KEY]
    python tests/django_login_peer.py --db URL --secret KEY [--table NAME] whoami --cookie KEY

``login`` runs a request through Django's SessionMiddleware whose view calls
``django.contrib.auth.login(request, user)`` for a user with primary key PK
(an unsaved ``User``: no auth tables are needed, and Django's
``update_last_login`` receiver is disconnected), and prints the session key
Django saved. ``whoami`` loads a session through the middleware and prints
the ``_auth_user_id`` Django sees in it (null when logged out). Same settings
as django_peer.py (USE_TZ, America/Chicago, the db session engine); each
command prints one JSON document.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from django_peer import DEFAULT_TABLE, database_from_url, install_custom_store  # noqa: E402

urlpatterns = []


def setup(args):
    custom = args.table != DEFAULT_TABLE
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="America/Chicago",
        SECRET_KEY=args.secret,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"],
        SESSION_ENGINE="django_peer" if custom else "django.contrib.sessions.backends.db",
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"],
        DATABASES={"default": database_from_url(args.db)},
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
    )
    django.setup()
    if custom:
        import django_peer

        install_custom_store(args.table)
        assert hasattr(django_peer, "SessionStore")
    from django.contrib.auth.models import update_last_login
    from django.contrib.auth.signals import user_logged_in

    user_logged_in.disconnect(update_last_login, dispatch_uid="update_last_login")


def through_middleware(cookie, view):
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.test import RequestFactory

    factory = RequestFactory()
    if cookie:
        factory.cookies[settings.SESSION_COOKIE_NAME] = cookie
    request = factory.get("/", HTTP_USER_AGENT="DjangoPeer/1.0")
    out = {}

    def wrapped(req):
        out.update(view(req))
        from django.http import HttpResponse

        return HttpResponse()

    SessionMiddleware(wrapped)(request)
    return request, out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--table", default=DEFAULT_TABLE)
    p.add_argument("cmd", choices=["login", "whoami"])
    p.add_argument("--user")
    p.add_argument("--cookie", default="")
    args = p.parse_args(argv)
    setup(args)
    from django.contrib.auth import SESSION_KEY, login
    from django.contrib.auth.models import User

    if args.cmd == "login":
        def view(request):
            user = User(pk=int(args.user), username=f"user{args.user}", password="!")
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return {}

        request, _ = through_middleware(args.cookie, view)
        print(json.dumps({"key": request.session.session_key}))
    else:
        request, out = through_middleware(args.cookie, lambda r: {"user": r.session.get(SESSION_KEY)})
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
