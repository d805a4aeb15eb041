"""The login page, with brute-force protection (dashboard/front/login_throttle.py)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpResponse

from dashboard.front.login_throttle import ThrottledAuthenticationForm


class LoginView(auth_views.LoginView):
    template_name = "front/login.html"
    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if getattr(form, "locked", False):
            response.status_code = 429  # Too Many Requests
        return response
