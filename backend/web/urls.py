from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from . import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="web/login.html", redirect_authenticated_user=True,
                                                next_page=reverse_lazy("web:home")), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page=reverse_lazy("web:login")), name="logout"),
    path("upload/", views.upload, name="upload"),
    path("import/", views.import_source, name="import"),
    path("jobs/<int:job_id>/", views.job_detail, name="job"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("photos/<int:image_id>/", views.photo, name="photo"),
    path("photos/<int:image_id>/image.jpg", views.photo_pixels, name="photo-pixels"),
    path("photos/<int:image_id>/tag/", views.photo_tag, name="photo-tag"),
    path("faces/<int:face_id>/assign/", views.face_assign, name="face-assign"),
    path("faces/<int:face_id>/reject/", views.face_reject, name="face-reject"),
    path("faces/<int:face_id>/new-person/", views.face_new_person, name="face-new-person"),
    path("people/", views.people, name="people"),
    path("people/new/", views.person_create, name="person-create"),
    path("people/<int:identity_id>/", views.person, name="person"),
    path("people/<int:identity_id>/rename/", views.person_rename, name="person-rename"),
    path("people/<int:identity_id>/templates/<int:template_id>/delete/", views.person_template_delete,
         name="person-template-delete"),
    path("people/<int:identity_id>/merge/", views.person_merge, name="person-merge"),
    path("people/<int:identity_id>/delete/", views.person_delete, name="person-delete"),
    path("people/<int:identity_id>/enroll/", views.person_enroll, name="person-enroll"),
    path("merges/", views.merges, name="merges"),
    path("merges/<int:merge_id>/undo/", views.merge_undo, name="merge-undo"),
    path("unknown/", views.unknown, name="unknown"),
    path("unknown/<int:cluster_id>/name/", views.cluster_name, name="cluster-name"),
    path("unknown/<int:cluster_id>/remove/<int:face_id>/", views.cluster_remove_face, name="cluster-remove-face"),
    path("search/", views.search_photo, name="search"),
    path("verify/", views.verify, name="verify"),
]
