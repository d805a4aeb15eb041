from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.front.views import admin_pages, exams, feed, login, results, upload

urlpatterns = [
    path("login/", login.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", feed.overview, name="overview"),
    path("api/feed", feed.feed_json, name="feed-json"),
    path("results/", results.result_list, name="results"),
    path("results/export.csv", results.export_csv, name="export-csv"),
    path("results/<uuid:result_id>/", results.detail, name="result"),
    path("results/<uuid:result_id>/review", results.review, name="review"),
    path("results/<uuid:result_id>/audio.wav", results.playback_audio, name="result-audio"),
    path("results/<uuid:result_id>/recording", results.original_audio, name="result-recording"),
    path("results/<uuid:result_id>/fhir.json", results.fhir_json, name="result-fhir"),
    path("exams/<int:pk>/", exams.detail, name="exam"),
    path("exams/<int:pk>/review", exams.review, name="exam-review"),
    path("exams/<int:pk>/fhir.json", exams.fhir_json, name="exam-fhir"),
    path("patients/<slug:clinic>/<str:patient_ref>/", results.patient, name="patient"),
    path("upload/", upload.upload, name="upload"),
    path("devices/", admin_pages.devices, name="devices"),
    path("devices/<str:device_id>/", admin_pages.device_edit, name="device"),
    path("dead-letters/", admin_pages.dead_letters, name="dead-letters"),
    path("refused/", admin_pages.refused, name="refused"),
    path("dead-letters/<int:pk>/", admin_pages.dead_letter, name="dead-letter"),
]
