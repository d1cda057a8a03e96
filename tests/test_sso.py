"""Single sign-on: group mappings become grants, the ID token's checks, the second factor
from the provider, local passwords turned off, and the mappings page.

The whole flow against a real OpenID provider process runs in the browser tier
(tests/services/test_sso_browser.py)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from sso import discovery
from sso.backends import ProviderBackend, second_factor_used
from sso.models import AccessEvent, GroupMapping, Identity, ManagedGrant
from sso.signin import Refusal, sign_in
from tests.conftest import make_user
from transfers.models import AccountGrant, Role

ISSUER = "https://idp.example"


def claims(sub="u-1", groups=("fleet-ops",), **extra) -> dict:
    return {
        "sub": sub,
        "preferred_username": "dana",
        "email": "dana@example.com",
        "groups": list(groups),
        **extra,
    }


def roles(user) -> set[tuple[str, str]]:
    return set(AccountGrant.objects.filter(user=user).values_list("account__account_id", "role"))


@pytest.fixture
def mapped(source, target):
    GroupMapping.objects.create(provider_group="fleet-ops", account=source, role=Role.REQUESTER)
    GroupMapping.objects.create(provider_group="security", account=None, role=Role.APPROVER)
    return source, target


class TestSignIn:
    def test_groups_become_grants_on_one_or_every_account(self, mapped):
        source, target = mapped
        user = sign_in(ISSUER, claims(groups=["fleet-ops", "security", "unmapped"]))
        assert user.username == "dana" and not user.is_staff and not user.is_superuser
        assert not user.has_usable_password()
        assert roles(user) == {
            (source.account_id, Role.REQUESTER),
            (source.account_id, Role.APPROVER),
            (target.account_id, Role.APPROVER),
        }
        identity = Identity.objects.get(user=user)
        assert (identity.issuer, identity.subject) == (ISSUER, "u-1")
        event = AccessEvent.objects.get(kind=AccessEvent.Kind.SIGNED_IN)
        assert "granted requester on 111111111111" in event.details["changes"]

    def test_a_removed_group_removes_its_role_at_the_next_sign_in(self, mapped):
        source, target = mapped
        user = sign_in(ISSUER, claims(groups=["fleet-ops", "security"]))
        # A grant given by hand is the admin's business, not the provider's.
        AccountGrant.objects.create(account=target, user=user, role=Role.VIEWER)
        again = sign_in(ISSUER, claims(groups=["fleet-ops"]))
        assert again.pk == user.pk
        assert roles(user) == {(source.account_id, Role.REQUESTER), (target.account_id, "viewer")}
        assert ManagedGrant.objects.filter(grant__user=user).count() == 1

    def test_a_person_in_no_mapped_group_cannot_sign_in_and_loses_what_sso_gave(self, mapped):
        user = sign_in(ISSUER, claims(groups=["fleet-ops"]))
        with pytest.raises(Refusal, match="none of your groups"):
            sign_in(ISSUER, claims(groups=["cafeteria"]))
        assert roles(user) == set()
        assert AccessEvent.objects.filter(kind=AccessEvent.Kind.REFUSED, user=user).exists()

    def test_it_never_takes_over_a_local_account_by_name(self, mapped):
        local = make_user("dana")
        with pytest.raises(Refusal, match="local portal account named 'dana'"):
            sign_in(ISSUER, claims())
        assert roles(local) == set() and not Identity.objects.exists()

    def test_the_same_name_at_another_subject_is_another_person(self, mapped):
        sign_in(ISSUER, claims(sub="u-1"))
        with pytest.raises(Refusal):
            sign_in(ISSUER, claims(sub="u-2"))  # also "dana": refused, not merged

    def test_staff_and_portal_admin_only_while_a_mapping_says_so(self, mapped):
        GroupMapping.objects.create(
            provider_group="admins", account=None, role=Role.ADMIN, staff=True, portal_admin=True
        )
        user = sign_in(ISSUER, claims(groups=["fleet-ops", "admins"]))
        assert user.is_staff and user.groups.filter(name="admin").exists()
        user = sign_in(ISSUER, claims(groups=["fleet-ops"]))
        user.refresh_from_db()
        assert not user.is_staff and not user.groups.filter(name="admin").exists()

    def test_a_disabled_user_cannot_sign_in(self, mapped):
        user = sign_in(ISSUER, claims())
        User.objects.filter(pk=user.pk).update(is_active=False)
        with pytest.raises(Refusal, match="disabled"):
            sign_in(ISSUER, claims())


# ------------------------------------------------------------------------- the ID token

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def backend(settings, monkeypatch):
    settings.OIDC_ISSUER = ISSUER
    settings.OIDC_RP_CLIENT_ID = "portal"
    settings.OIDC_RP_CLIENT_SECRET = "secret"
    monkeypatch.setattr(discovery, "document", lambda: {"issuer": ISSUER})
    return ProviderBackend()


def token(key=KEY, **changes) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "portal", "sub": "u-1", "iat": now, "exp": now + 300}
    body.update(changes)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256")


class TestIdToken:
    def test_a_good_token_passes(self, backend):
        assert backend._verify_jws(token(), KEY.public_key())["sub"] == "u-1"

    @pytest.mark.parametrize(
        ("changes", "words"),
        [
            ({"aud": "another-app"}, "wrong audience"),
            ({"aud": ["portal", "another-app"]}, "wrong audience"),  # no azp
            ({"exp": int(time.time()) - 3600}, "expired"),
            ({"iss": "https://evil.example"}, "wrong issuer"),
            ({"key": OTHER_KEY}, "signature check"),
            ({"exp": None}, "not valid"),
        ],
    )
    def test_it_refuses(self, backend, changes, words):
        with pytest.raises(Refusal, match=words):
            backend._verify_jws(token(**changes), KEY.public_key())

    def test_it_refuses_another_algorithm(self, backend):
        forged = jwt.encode({"sub": "u-1"}, "s" * 32, algorithm="HS256")
        with pytest.raises(Refusal, match="unexpected algorithm"):
            backend._verify_jws(forged, KEY.public_key())

    def test_several_audiences_need_azp_to_be_the_portal(self, backend):
        both = token(aud=["portal", "api"], azp="portal")
        assert backend._verify_jws(both, KEY.public_key())["azp"] == "portal"

    def test_a_password_login_passes_through_without_touching_the_provider(self, backend, rf):
        assert backend.authenticate(rf.post("/login/"), username="x", password="y") is None


class TestSecondFactorFromTheProvider:
    def test_amr_values(self, settings):
        settings.OIDC_MFA_AMR = ["mfa"]
        assert second_factor_used({"amr": ["pwd", "mfa"]})
        assert not second_factor_used({"amr": ["pwd"]})
        assert not second_factor_used({})

    def test_acr_values(self, settings):
        settings.OIDC_MFA_ACR = ["urn:okta:loa:2fa:any", "2"]
        assert second_factor_used({"acr": "urn:okta:loa:2fa:any"})
        assert second_factor_used({"acr": 2})
        assert not second_factor_used({"acr": "1"})


# -------------------------------------------------------------------- local passwords


class TestLocalPasswords:
    def test_turned_off_for_everyone_but_the_break_glass_admin(self, settings, requester):
        settings.PASSWORD_LOGIN = False
        settings.PASSWORD_LOGIN_USERS = ["breakglass"]
        make_user("breakglass")
        client = Client()
        page = client.post(reverse("login"), {"username": "requester", "password": "pw"})
        assert page.status_code == 200 and "_auth_user_id" not in client.session
        assert "Passwords work here only for break-glass admins" in page.content.decode()
        page = client.post(reverse("login"), {"username": "breakglass", "password": "pw"})
        assert page.status_code == 302 and client.session["_auth_user_id"]

    def test_a_wrong_break_glass_password_reads_the_same(self, settings, db):
        settings.PASSWORD_LOGIN = False
        settings.PASSWORD_LOGIN_USERS = ["breakglass"]
        make_user("breakglass")
        page = Client().post(reverse("login"), {"username": "breakglass", "password": "no"})
        assert "Passwords work here only for break-glass admins" in page.content.decode()

    def test_on_by_default(self, requester):
        client = Client()
        client.post(reverse("login"), {"username": "requester", "password": "pw"})
        assert client.session["_auth_user_id"] == str(requester.pk)

    def test_the_login_page_offers_the_provider_when_configured(self, settings, db):
        assert "Sign in with" not in Client().get(reverse("login")).content.decode()
        settings.OIDC_ISSUER = ISSUER
        settings.OIDC_PROVIDER_NAME = "Acme Okta"
        settings.PASSWORD_LOGIN = False
        page = Client().get(reverse("login") + "?next=/transfers/").content.decode()
        assert "Sign in with Acme Okta" in page
        assert "/oidc/authenticate/?next=/transfers/" in page
        assert "Break-glass admin" in page

    def test_the_provider_pages_are_not_there_without_configuration(self, db):
        assert Client().get("/oidc/authenticate/").status_code == 404
        assert Client().get("/oidc/callback/?code=x&state=y").status_code == 404


class TestCallbackRefusals:
    def test_an_unknown_state_gets_a_clear_page(self, backend, settings, db):
        client = Client()
        session = client.session
        session["oidc_states"] = {"started": {"nonce": "n", "code_verifier": None}}
        session.save()
        page = client.get("/oidc/callback/?code=abc&state=forged")
        assert page.status_code == 400
        assert "does not match one started in this browser" in page.content.decode()
        assert "_auth_user_id" not in client.session

    def test_no_sign_in_started_gets_a_clear_page(self, backend, db):
        page = Client().get("/oidc/callback/?code=abc&state=forged")
        assert page.status_code == 400
        assert "not started in this browser" in page.content.decode()

    def test_a_provider_error_gets_a_clear_page(self, backend, db):
        page = Client().get("/oidc/callback/?error=access_denied&error_description=No+way")
        assert page.status_code == 403 and "did not sign you in: No way." in page.content.decode()


# ----------------------------------------------------------------------- mappings page


class TestMappingsPage:
    url = "/sso/groups/"

    def test_a_portal_admin_adds_and_removes_a_mapping(self, client, portal_admin, source):
        AccountGrant.objects.create(account=source, user=portal_admin, role=Role.ADMIN)
        client.force_login(portal_admin)
        assert client.get(self.url).status_code == 200
        page = client.post(
            self.url, {"provider_group": "fleet-ops", "account": source.pk, "role": "approver"}
        )
        assert page.status_code == 302
        mapping = GroupMapping.objects.get()
        assert (mapping.provider_group, mapping.account, mapping.role) == (
            "fleet-ops",
            source,
            "approver",
        )
        client.post(f"/sso/groups/{mapping.pk}/delete/")
        assert not GroupMapping.objects.filter(pk=mapping.pk).exists()
        kinds = list(AccessEvent.objects.values_list("kind", flat=True))
        assert sorted(kinds) == ["mapping_added", "mapping_removed"]

    def test_a_superuser_maps_a_group_on_every_account(self, client, db):
        client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
        every = client.post(self.url, {"provider_group": "sec", "account": "", "role": "viewer"})
        assert every.status_code == 302
        assert GroupMapping.objects.get(provider_group="sec").account is None

    def test_a_duplicate_is_refused_and_changes_nothing(self, client, db):
        client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
        GroupMapping.objects.create(provider_group="g", account=None, role="viewer")
        page = client.post(self.url, {"provider_group": "g", "account": "", "role": "viewer"})
        assert page.status_code == 200 and "already has this role" in page.content.decode()
        assert GroupMapping.objects.count() == 1

    def test_anonymous_goes_to_the_login_page(self, db):
        assert Client().get(self.url).url.startswith("/login/")

    def test_an_account_admin_who_is_not_a_portal_admin_gets_403(self, client, outsider):
        client.force_login(outsider)
        assert client.get(self.url).status_code == 403
        assert client.post(self.url, {"provider_group": "g", "role": "admin"}).status_code == 403
        assert not GroupMapping.objects.exists()

    def test_delete_needs_post_and_an_admin(self, client, portal_admin, outsider):
        mapping = GroupMapping.objects.create(provider_group="g", role="viewer")
        client.force_login(outsider)
        assert client.post(f"/sso/groups/{mapping.pk}/delete/").status_code == 403
        client.force_login(portal_admin)
        assert client.get(f"/sso/groups/{mapping.pk}/delete/").status_code == 405
        assert client.post("/sso/groups/999999/delete/").status_code == 404
        assert GroupMapping.objects.filter(pk=mapping.pk).exists()


class TestMappingsReachOnlyTheEditorsAccounts:
    """A portal admin maps groups only on accounts where they are ADMIN; every account is a
    superuser's. Other accounts' mappings and names stay out of their page."""

    url = "/sso/groups/"

    @pytest.fixture
    def editor(self, portal_admin, source, target):
        AccountGrant.objects.create(account=source, user=portal_admin, role=Role.ADMIN)
        AccountGrant.objects.create(account=target, user=portal_admin, role=Role.VIEWER)
        return portal_admin

    def test_the_form_offers_only_accounts_they_administer(self, client, editor, other):
        client.force_login(editor)
        form = client.get(self.url).context["form"]
        assert [a.account_id for a in form.fields["account"].queryset] == ["111111111111"]
        assert other.name not in client.get(self.url).content.decode()

    @pytest.mark.parametrize(
        "where, words",
        [
            ("every", "only a superuser maps a group on every account"),
            ("other", "Select a valid choice"),
            ("target", "Select a valid choice"),
        ],
    )
    def test_anywhere_else_is_refused_and_nothing_is_saved(
        self, client, editor, other, target, where, words
    ):
        account = {"every": "", "other": other.pk, "target": target.pk}[where]
        client.force_login(editor)
        page = client.post(self.url, {"provider_group": "g", "account": account, "role": "admin"})
        assert page.status_code == 200 and words in page.content.decode()
        assert not GroupMapping.objects.exists() and not AccessEvent.objects.exists()

    def test_other_accounts_mappings_are_neither_shown_nor_removable(
        self, client, editor, other, target
    ):
        hidden = GroupMapping.objects.create(provider_group="theirs", account=other, role="admin")
        every = GroupMapping.objects.create(provider_group="everyone", role="viewer")
        seen = GroupMapping.objects.create(provider_group="viewers", account=target, role="admin")
        client.force_login(editor)
        page = client.get(self.url).content.decode()
        assert "theirs" not in page and other.name not in page
        assert "everyone" in page and "viewers" in page
        assert f"/sso/groups/{every.pk}/delete/" not in page
        assert client.post(f"/sso/groups/{hidden.pk}/delete/").status_code == 404
        assert client.post(f"/sso/groups/{every.pk}/delete/").status_code == 403
        assert client.post(f"/sso/groups/{seen.pk}/delete/").status_code == 403
        assert GroupMapping.objects.count() == 3

    def test_recent_changes_name_only_accounts_they_can_see(self, client, editor, other):
        GroupMapping.objects.create(provider_group="theirs", account=other, role="admin")
        sign_in(ISSUER, claims(groups=["theirs"]))
        AccessEvent.objects.create(
            kind=AccessEvent.Kind.MAPPING_ADDED,
            details={"mapping": str(GroupMapping.objects.get()), "account": other.account_id},
        )
        client.force_login(editor)
        page = client.get(self.url).content.decode()
        assert other.account_id not in page and other.name not in page
        assert "Signed in" in page  # the sign-in itself, without the other account's grant


def test_users_made_by_sign_in_are_in_no_group_by_default(mapped):
    user = sign_in(ISSUER, claims())
    assert not user.groups.exists() and Group.objects.filter(name="admin").exists()


class TestDiscovery:
    def test_an_unreachable_provider_gets_a_clear_page(self, backend, monkeypatch, db):
        def down():
            raise discovery.DiscoveryError("connection refused")

        monkeypatch.setattr(discovery, "document", down)
        page = Client().get("/oidc/authenticate/")
        assert page.status_code == 503
        assert "could not be reached" in page.content.decode()

    def test_a_document_naming_another_issuer_is_refused(self, settings, monkeypatch, db):
        settings.OIDC_ISSUER = ISSUER
        settings.OIDC_DISCOVERY_URL = f"{ISSUER}/.well-known/openid-configuration"

        class Answer:
            def raise_for_status(self):
                return None

            def json(self):
                return {
                    "issuer": "https://evil.example",
                    "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/jwks",
                }

        monkeypatch.setattr(discovery.requests, "get", lambda url, timeout: Answer())
        with pytest.raises(discovery.DiscoveryError, match="names issuer 'https://evil.example'"):
            discovery.document()

    def test_the_start_sends_the_browser_to_the_provider_with_state_nonce_and_pkce(
        self, backend, monkeypatch, db
    ):
        monkeypatch.setattr(
            discovery,
            "document",
            lambda: {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth"},
        )
        client = Client()
        answer = client.get("/oidc/authenticate/?next=/transfers/")
        assert answer.status_code == 302 and answer.url.startswith(f"{ISSUER}/auth?")
        for part in ("state=", "nonce=", "code_challenge=", "client_id=portal"):
            assert part in answer.url
        assert client.session["oidc_login_next"] == "/transfers/"


def test_a_provider_error_is_recorded_once(backend, db):
    Client().get("/oidc/callback/?error=access_denied&state=x")
    assert AccessEvent.objects.filter(kind=AccessEvent.Kind.REFUSED).count() == 1
