"""JSON API for automation: the same objects, permissions and rules as the pages.

- errors: the one error shape and the error responses the schema documents
- outputs: what the API answers (serializers of certificates, plans, transfers)
- inputs: what it reads (request bodies and query parameters)
- views: the operations on certificates, transfers and batches
- portal: those around them (notices, accounts, the audit log, your preferences)
- routes: their URLs (mounted at /api/)
- tokens: API tokens (django-rest-knox), the authentication class
- throttling: the per-token rate (429 with Retry-After)
"""
