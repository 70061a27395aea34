from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_save


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "REST API"

    def ready(self):
        from api.tokens import revoke_after_password_change

        post_save.connect(revoke_after_password_change, sender=settings.AUTH_USER_MODEL,
                          dispatch_uid="api.tokens.revoke_after_password_change")
