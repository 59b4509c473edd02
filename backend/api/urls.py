from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from backend.gallery import apis as gallery
from backend.jobs import apis as jobs
from backend.reports import apis as reports

urlpatterns = [
    path("auth/token", obtain_auth_token, name="auth-token"),
    path("jobs", jobs.JobListApi.as_view(), name="jobs"),
    path("jobs/<int:job_id>", jobs.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/images", jobs.JobImagesApi.as_view(), name="job-images"),
    path("jobs/<int:job_id>/report", reports.JobReportApi.as_view(), name="job-report"),
    path("jobs/<int:job_id>/cancel", jobs.JobCancelApi.as_view(), name="job-cancel"),
    path("webhook", jobs.WebhookEndpointApi.as_view(), name="webhook"),
    path("webhooks/deliveries", jobs.WebhookDeliveryListApi.as_view(), name="webhook-deliveries"),
    path("images/<int:image_id>", jobs.ImageDetailApi.as_view(), name="image-detail"),
    path("faces", jobs.FaceListApi.as_view(), name="faces"),
    path("identities", gallery.IdentityListApi.as_view(), name="identities"),
    path("identities/<int:identity_id>", gallery.IdentityDetailApi.as_view(), name="identity-detail"),
    path("identities/<int:identity_id>/enroll", gallery.IdentityEnrollApi.as_view(), name="identity-enroll"),
    path("enrollments/<int:enrollment_id>", gallery.EnrollmentDetailApi.as_view(), name="enrollment-detail"),
    path("identities/<int:identity_id>/faces", gallery.IdentityFacesApi.as_view(), name="identity-faces"),
    path("identities/<int:identity_id>/report", reports.IdentityReportApi.as_view(), name="identity-report"),
    path("identities/<int:identity_id>/templates", gallery.IdentityTemplateListApi.as_view(), name="identity-templates"),
    path("identities/<int:identity_id>/templates/<int:template_id>", gallery.IdentityTemplateDetailApi.as_view(),
         name="identity-template-detail"),
    path("identities/<int:identity_id>/enroll-faces", gallery.IdentityEnrollFacesApi.as_view(), name="identity-enroll-faces"),
    path("identities/<int:identity_id>/merge", gallery.IdentityMergeApi.as_view(), name="identity-merge"),
    path("merges", gallery.MergeListApi.as_view(), name="merges"),
    path("merges/<int:merge_id>/undo", gallery.MergeUndoApi.as_view(), name="merge-undo"),
    path("faces/<int:face_id>/assign", gallery.FaceAssignApi.as_view(), name="face-assign"),
    path("faces/<int:face_id>/reject", gallery.FaceRejectApi.as_view(), name="face-reject"),
    path("images/<int:image_id>/faces", gallery.ImageTagFaceApi.as_view(), name="image-tag-face"),
    path("verify", gallery.VerifyApi.as_view(), name="verify"),
    path("search", gallery.SearchApi.as_view(), name="search"),
    path("matching-policy", gallery.MatchingPolicyApi.as_view(), name="matching-policy"),
    path("clusters", gallery.ClusterListApi.as_view(), name="clusters"),
    path("clusters/<int:cluster_id>", gallery.ClusterDetailApi.as_view(), name="cluster-detail"),
    path("clusters/<int:cluster_id>/name", gallery.ClusterNameApi.as_view(), name="cluster-name"),
    path("clusters/<int:cluster_id>/faces/<int:face_id>", gallery.ClusterFaceApi.as_view(), name="cluster-face"),
    path("reports/identities", reports.IdentityReportListApi.as_view(), name="report-identities"),
    path("reports/identities/<int:identity_id>", reports.IdentityStatisticsApi.as_view(), name="report-identity"),
    path("reports/identities/<int:identity_id>/timeline.png", reports.IdentityTimelineChartApi.as_view(), name="report-identity-timeline"),
    path("reports/jobs/<int:job_id>", reports.JobReportSummaryApi.as_view(), name="report-job"),
    path("reports/appearances", reports.AppearanceListApi.as_view(), name="report-appearances"),
    path("reports/appearances.csv", reports.AppearanceCsvApi.as_view(), name="report-appearances-csv"),
]
