from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "stethoscope-edge administration"
admin.site.site_title = "stethoscope-edge"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("dashboard.front.urls")),
]
