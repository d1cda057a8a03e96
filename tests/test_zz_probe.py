from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from tests.conftest import TARGET, make_user, add_certificate, iot_for
from transfers import inventory
from transfers.models import Role, Transfer, Certificate

def api(user):
    c = APIClient(); c.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}"); return c

def test_probe(client, requester, source, target, standin):
    made = add_certificate(iot_for(source), "ACTIVE", ["P"])
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get()
    admin = make_user("acctadmin", (source, Role.ADMIN))
    a = api(admin)
    for t in ["١١١١١١١١١١١١", "２２２２２２２２２２２２", " 222222222222", "222222222222\n", "222222222222\x00"]:
        r = a.post("/api/certificates/%d/plan/" % cert.pk, {"target_account_id": t}, format="json"); print(repr(t), "plan", r.status_code, r.content[:300])
        r = a.post("/api/transfers/", {"certificate": cert.pk, "target_account_id": t, "reason": "x"}, format="json"); print(repr(t), "req", r.status_code, r.content[:200])
    client.force_login(admin)
    r = client.post(f"/certificates/{cert.pk}/transfer/", {"target": "new", "new_target_id": "١١١١١١١١١١١٢", "reason": "r", "action": "preview"})
    print("form", r.status_code, "exactly 12" in r.content.decode(), "not known" in r.content.decode())
    print(Transfer.objects.count())
