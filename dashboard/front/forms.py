"""Forms validate at the edge; what they accept is what the models and services expect."""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from dashboard.clinic.models import AWAITING_REVIEW_LABELS, LABELS, LOCATIONS, Clinic, Device, Result, Review

PATIENT_REF_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _patient_ref(value: str) -> str:
    value = value.strip()
    if value and not PATIENT_REF_RE.match(value):
        raise forms.ValidationError("use the pseudonymous patient reference (letters, digits, _ . : -), never a name")
    return value


class ResultFilterForm(forms.Form):
    REVIEW = (("", "any"), ("awaiting", "awaiting review"), ("reviewed", "reviewed"))

    label = forms.ChoiceField(choices=[("", "any")] + [(v, v) for v in LABELS], required=False)
    review = forms.ChoiceField(choices=REVIEW, required=False)
    clinic = forms.ModelChoiceField(Clinic.objects.all(), required=False, to_field_name="slug", empty_label="any")
    device = forms.CharField(required=False, max_length=63)
    patient_ref = forms.CharField(required=False, max_length=64, label="Patient")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To")

    def clean_patient_ref(self) -> str:
        return _patient_ref(self.cleaned_data["patient_ref"])

    def apply(self, qs: QuerySet[Result]) -> QuerySet[Result]:
        """Narrow ``qs`` (already limited to what the user may see) by the valid filters."""
        if not self.is_valid():
            return qs.none()
        data = self.cleaned_data
        if data["label"]:
            qs = qs.filter(label=data["label"])
        if data["clinic"]:
            qs = qs.filter(clinic=data["clinic"])
        if data["device"]:
            qs = qs.filter(device__device_id=data["device"].strip())
        if data["patient_ref"]:
            qs = qs.filter(patient_ref=data["patient_ref"])
        tz = timezone.get_current_timezone()
        if data["date_from"]:
            qs = qs.filter(recorded_at__gte=datetime.combine(data["date_from"], time.min, tz))
        if data["date_to"]:
            qs = qs.filter(recorded_at__lte=datetime.combine(data["date_to"], time.max, tz))
        if data["review"] == "awaiting":
            qs = qs.filter(label__in=AWAITING_REVIEW_LABELS, reviewed=False)
        elif data["review"] == "reviewed":
            qs = qs.filter(reviewed=True)
        return qs


class ReviewForm(forms.Form):
    VERDICTS = (("agree", "Agree with the model"), ("disagree", "Disagree with the model"))

    verdict = forms.ChoiceField(choices=VERDICTS, widget=forms.RadioSelect)
    label = forms.ChoiceField(
        choices=[("", "same as the model"), *Review.LABELS],
        required=False,
        label="Physician's label",
    )
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=4000)

    def __init__(self, *args: Any, model_label: str, subject: str = "the model", **kwargs: Any) -> None:
        """``model_label``: what the reading agrees or disagrees with (a result's label, an exam's answer),
        ``subject`` what gave it, as the choices name it."""
        super().__init__(*args, **kwargs)
        self.model_label = model_label
        verdict = self.fields["verdict"]
        assert isinstance(verdict, forms.ChoiceField)
        verdict.choices = [("agree", f"Agree with {subject}"), ("disagree", f"Disagree with {subject}")]
        label = self.fields["label"]
        assert isinstance(label, forms.ChoiceField)
        label.choices = [("", f"same as {subject}"), *Review.LABELS]

    def problems(self) -> str:
        """Why the form was refused, in one line (shown above the form, which keeps what was typed)."""
        problems = [str(e) for e in self.non_field_errors()] or ["check the form"]
        problems += [f"{f}: {' '.join(map(str, errs))}" for f, errs in self.errors.items() if f != "__all__"]
        return "Review not saved: " + " ".join(problems)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        agrees = data.get("verdict") == "agree"
        label = data.get("label") or ""
        model_label = self.model_label
        if agrees:
            if not label:
                if model_label not in ("normal", "abnormal"):
                    raise forms.ValidationError(
                        f"the model said '{model_label}': choose your own label (normal, abnormal or inconclusive)"
                    )
                label = model_label
            elif label != model_label and model_label in ("normal", "abnormal"):
                raise forms.ValidationError(
                    f"you agree with the model, which said '{model_label}', but chose '{label}': pick one"
                )
        else:
            if not label:
                raise forms.ValidationError("you disagree with the model: choose your own label")
            if label == model_label:
                raise forms.ValidationError(f"you disagree, but chose the model's own label '{label}'")
        data["agrees"] = agrees
        data["label"] = label
        return data


class UploadForm(forms.Form):
    recording = forms.FileField(help_text="WAV or FLAC, as recorded")
    clinic = forms.ModelChoiceField(Clinic.objects.none(), required=False, empty_label="(none)")
    patient_ref = forms.CharField(required=False, max_length=64, label="Patient reference")
    location = forms.ChoiceField(
        choices=[("", "not given")] + [(v, v) for v in LOCATIONS], required=False, label="Auscultation site"
    )

    def __init__(self, *args: Any, clinics: QuerySet[Clinic], max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_bytes = max_bytes
        clinic_field = self.fields["clinic"]
        assert isinstance(clinic_field, forms.ModelChoiceField)
        clinic_field.queryset = clinics
        if clinics.count() == 1:
            clinic_field.initial = clinics.first()
            clinic_field.required = True
            clinic_field.empty_label = None

    def clean_recording(self) -> Any:
        f = self.cleaned_data["recording"]
        if f.size > self.max_bytes:
            raise forms.ValidationError(
                f"“{f.name}” is {f.size / 1e6:.1f} MB; the limit is {self.max_bytes / 1e6:.0f} MB: "
                "upload a shorter recording"
            )
        return f

    def clean_patient_ref(self) -> str:
        return _patient_ref(self.cleaned_data["patient_ref"])


class DeviceForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = ("device_id", "name", "clinic")
