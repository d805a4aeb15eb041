from django.apps import AppConfig


class FrontConfig(AppConfig):
    name = "dashboard.front"
    label = "front"
    verbose_name = "Pages"
