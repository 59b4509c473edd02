from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("backend.api.urls")),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

# Errors outside DRF's views (unknown URLs, the admin, a crash) answer in the API's JSON shape too.
handler400 = "backend.core.errors.bad_request"
handler403 = "backend.core.errors.permission_denied"
handler404 = "backend.core.errors.page_not_found"
handler500 = "backend.core.errors.server_error"
