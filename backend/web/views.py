"""The web app: server-rendered pages for the people who own the photos.

Thin views over the same services, selectors and owner isolation as the REST
API (every lookup filters on request.user; another owner's object is a 404).
Session login; every change is a POST form (CSRF-protected) that redirects
back to a page. A service's refusal (ServiceError) becomes a message on the
page the form came from.
"""
from __future__ import annotations

import math
from functools import wraps

import cv2
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from minio.error import S3Error
from ml.decode import decode_image
from ml.errors import ImageDecodeError

from backend.core.errors import NotFound, ServiceError
from backend.core.pipeline import encode_jpeg
from backend.gallery import clustering, merging, naming, search, services as gallery
from backend.gallery.selectors import identity_templates
from backend.gallery.models import Enrollment, Identity, Merge
from backend.jobs import services as jobs
from backend.jobs.models import Image, Job
from backend.jobs.processing import SourceUnreadable, read_original
from backend.jobs.serializers import job_rate
from backend.core.uploads import Upload
from backend.reports import selectors as reports

from . import selectors
from .selectors import thumbnail_url

PEOPLE_PER_PAGE = 24
APPEARANCES_PER_PAGE = 24
CLUSTERS_PER_PAGE = 12
IMAGES_PER_PAGE = 50
# The photo page shows the upright original scaled to at most this many pixels
# on its long side; boxes are placed in percent, so any scale lines up.
PHOTO_MAX_SIDE = 1600


def _back(request, fallback: str) -> str:
    """Where a form should return: its `next` field or the referring page of this site, else `fallback`."""
    for candidate in (request.POST.get("next"), request.META.get("HTTP_REFERER")):
        if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                         require_https=request.is_secure()):
            return candidate
    return fallback


def _has_nul(request) -> bool:
    return any("\x00" in value for data in (request.GET, request.POST) for _, values in data.lists() for value in values)


def page_view(view):
    """Signed-in users only; NotFound is a 404, any other ServiceError a message on the referring page."""
    @login_required(login_url="web:login")
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if _has_nul(request):  # PostgreSQL text cannot hold NUL; DRF's fields refuse it for the API alike
            messages.error(request, "text must not contain NUL characters")
            return redirect(_back(request, reverse("web:home")))
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect(_back(request, reverse("web:home")))
        except ValidationError as exc:  # a model's own check (e.g. a name longer than the column)
            messages.error(request, " ".join(exc.messages))
            return redirect(_back(request, reverse("web:home")))
    return wrapper


def _page(request, queryset, per_page: int):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def _uploads(request, field: str = "files") -> list[Upload]:
    files = request.FILES.getlist(field)
    if not files:
        raise ServiceError("no_files", "choose one or more photos or zip archives first", field=field)
    return [Upload(f.name, f, f.size) for f in files]


def _one_upload(request, field: str) -> Upload:
    f = request.FILES.get(field)
    if f is None:
        raise ServiceError("no_files", "choose a photo first", field=field)
    return Upload(f.name, f, f.size)


def _chosen_person(request, owner) -> Identity:
    """The person a form names: `identity_id` (set by the type-ahead) or an exact `person` name."""
    raw_id = request.POST.get("identity_id", "").strip()
    if raw_id.isascii() and raw_id.isdigit():
        return gallery.get_identity(owner=owner, identity_id=int(raw_id))
    name = request.POST.get("person", "").strip()
    if not name:
        raise ServiceError("invalid", "type a person's name and pick it from the list", field="person")
    matches = list(Identity.objects.filter(owner=owner, name__iexact=name)[:2])
    if not matches:
        raise ServiceError("invalid", f"nobody is called {name!r}; create a new person instead", field="person")
    if len(matches) > 1:
        raise ServiceError("invalid", f"several people are called {name!r}; pick one from the list", field="person")
    return matches[0]


def _owned_image(request, image_id: int) -> Image:
    return get_object_or_404(Image, owner=request.user, pk=image_id)


# --- jobs ----------------------------------------------------------------------------------------


@page_view
@require_GET
def home(request):
    return render(request, "web/home.html", {
        "jobs": Job.objects.filter(owner=request.user).order_by("-created_at")[:10],
        "import_allowed": bool(settings.FACEINDEX_IMPORT_ROOTS or settings.FACEINDEX_IMPORT_S3_BUCKETS),
        "import_roots": settings.FACEINDEX_IMPORT_ROOTS,
        "import_buckets": settings.FACEINDEX_IMPORT_S3_BUCKETS,
    })


@page_view
@require_POST
def upload(request):
    options = {"attributes": True} if request.POST.get("attributes") else {}
    job, _ = jobs.submit_job(owner=request.user, uploads=_uploads(request), options=options)
    return redirect("web:job", job_id=job.pk)


@page_view
@require_POST
def import_source(request):
    source = request.POST.get("source", "").strip()
    if not source:
        raise ServiceError("invalid", "give a folder or an s3://bucket/prefix", field="source")
    job, _ = jobs.submit_import(owner=request.user, source=source)
    return redirect("web:job", job_id=job.pk)


@page_view
@require_GET
def job_detail(request, job_id: int):
    job = get_object_or_404(Job, owner=request.user, pk=job_id)
    rate, eta = job_rate(job)
    return render(request, "web/job.html", {
        "job": job, "rate": rate, "eta": eta, "live": job.status in (Job.Status.PENDING, Job.Status.RUNNING),
        "failures": selectors.job_failures(job), "images": _page(request, selectors.job_images(job), IMAGES_PER_PAGE),
    })


@page_view
@require_POST
def job_cancel(request, job_id: int):
    job = jobs.cancel_job(get_object_or_404(Job, owner=request.user, pk=job_id))
    messages.info(request, f"Job {job.pk} is {job.status}; finished photos stay indexed.")
    return redirect("web:job", job_id=job.pk)


# --- photos and faces ----------------------------------------------------------------------------


@page_view
@require_GET
def photo(request, image_id: int):
    image = _owned_image(request, image_id)
    if image.linked_from_id:  # the same content indexed earlier: its faces live there
        return redirect("web:photo", image_id=image.linked_from_id)
    faces = selectors.photo_faces(image)
    width, height = image.width or 1, image.height or 1
    boxes = [{
        "face": face,
        "crop_url": thumbnail_url(face.crop_key),
        "left": 100 * face.box_x / width, "top": 100 * face.box_y / height,
        "width": 100 * face.box_w / width, "height": 100 * face.box_h / height,
    } for face in faces]
    return render(request, "web/photo.html", {"image": image, "boxes": boxes})


@page_view
@require_GET
def photo_pixels(request, image_id: int):
    """The original after EXIF rotation (the pixels the boxes refer to), as a JPEG."""
    image = _owned_image(request, image_id)
    try:
        decoded = decode_image(read_original(image), max_pixels=settings.FACEINDEX_MAX_PIXELS)
    except (ImageDecodeError, SourceUnreadable, S3Error) as exc:  # e.g. an imported file removed since
        raise Http404(f"cannot show {image.original_name}: {exc}")
    pixels = decoded.pixels
    scale = PHOTO_MAX_SIDE / max(decoded.width, decoded.height)
    if scale < 1:
        pixels = cv2.resize(pixels, (round(decoded.width * scale), round(decoded.height * scale)), interpolation=cv2.INTER_AREA)
    response = HttpResponse(encode_jpeg(pixels, quality=88), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@page_view
@require_POST
def photo_tag(request, image_id: int):
    _owned_image(request, image_id)
    try:
        box = [float(request.POST[k]) for k in ("x", "y", "w", "h")]
    except (KeyError, ValueError):
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ServiceError("invalid", "draw a box around the face first", field="box")
    identity = _chosen_person(request, request.user) if (request.POST.get("person") or request.POST.get("identity_id")) else None
    face = gallery.tag_face(owner=request.user, image_id=image_id, box=box, identity_id=identity.pk if identity else None)
    messages.success(request, f"Tagged a face: {face.identity.name if face.identity_id else 'unknown'}.")
    return redirect(reverse("web:photo", args=[face.image_id]) + f"#face-{face.pk}")


@page_view
@require_POST
def face_assign(request, face_id: int):
    gallery.get_face(owner=request.user, face_id=face_id)  # another owner's face: 404 before anything else
    identity = _chosen_person(request, request.user)
    face = gallery.assign_face(owner=request.user, face_id=face_id, identity_id=identity.pk)
    messages.success(request, f"This face is now {identity.name}.")
    return redirect(_back(request, reverse("web:photo", args=[face.image_id])))


@page_view
@require_POST
def face_reject(request, face_id: int):
    before = gallery.get_face(owner=request.user, face_id=face_id)
    name = before.identity.name if before.identity_id else None
    face = gallery.reject_face(owner=request.user, face_id=face_id)
    now = face.identity.name if face.identity_id else "unknown"
    messages.success(request, f"Not {name}: this face is now {now}.")
    return redirect(_back(request, reverse("web:photo", args=[face.image_id])))


@page_view
@require_POST
def face_new_person(request, face_id: int):
    """A new person enrolled from this face: it becomes the person's first template."""
    face = gallery.get_face(owner=request.user, face_id=face_id)
    identity = gallery.create_identity_from_face(owner=request.user, name=request.POST.get("name", ""), face_id=face.pk)
    messages.success(request, f"Created {identity.name} from this face.")
    return redirect(_back(request, reverse("web:photo", args=[face.image_id])))


# --- people --------------------------------------------------------------------------------------


@page_view
@require_GET
def people(request):
    query = request.GET.get("q", "").strip()
    page = _page(request, selectors.people(owner=request.user, search=query), PEOPLE_PER_PAGE)
    cards = [{"identity": i, "cover_url": thumbnail_url(i.cover_key)} for i in page]
    return render(request, "web/people.html", {"page": page, "cards": cards, "q": query})


def _enroll(request, identity: Identity) -> None:
    """Enroll the uploaded photos (in this request, or by a worker when there are many) and say how it went."""
    summary = gallery.enroll(identity=identity, uploads=_uploads(request))
    if isinstance(summary, Enrollment):
        messages.info(request, f"Enrolling {len(summary.files)} photos of {identity.name} in the background; "
                               "the templates appear here as they are made.")
        return
    if summary.enrolled:
        messages.success(request, f"Enrolled {summary.enrolled} photo(s) of {identity.name}.")
    for result in summary.results:
        if result.error:
            messages.error(request, f"{result.name}: {result.error['message']}")


@page_view
@require_POST
def person_create(request):
    identity = gallery.create_identity(owner=request.user, name=request.POST.get("name", ""))
    if request.FILES.getlist("files"):
        _enroll(request, identity)
    return redirect("web:person", identity_id=identity.pk)


@page_view
@require_GET
def person(request, identity_id: int):
    identity = gallery.get_identity(owner=request.user, identity_id=identity_id)
    page = _page(request, selectors.appearances(owner=request.user, identity=identity), APPEARANCES_PER_PAGE)
    tiles = [{"face": face, "crop_url": thumbnail_url(face.crop_key)} for face in page]
    # At most FACEINDEX_MAX_TEMPLATES_PER_IDENTITY: one query, no pages.
    templates = [{"template": t, "crop_url": thumbnail_url(t.crop_key)} for t in identity_templates(identity)]
    return render(request, "web/person.html", {
        "identity": identity, "page": page, "tiles": tiles, "templates": templates,
        "stats": reports.identity_statistics(owner=request.user, identity=identity),
        "merges_in": Merge.objects.filter(owner=request.user, target=identity).order_by("-created_at")[:10],
    })


@page_view
@require_POST
def person_template_delete(request, identity_id: int, template_id: int):
    """Undo one template; the person's faces are matched again in the background."""
    identity = gallery.get_identity(owner=request.user, identity_id=identity_id)
    gallery.delete_template(identity=identity, template_id=template_id)
    messages.success(request, f"Removed a template of {identity.name}; their photos are being matched again.")
    return redirect("web:person", identity_id=identity.pk)


@page_view
@require_POST
def person_rename(request, identity_id: int):
    identity = gallery.get_identity(owner=request.user, identity_id=identity_id)
    gallery.rename_identity(identity=identity, name=request.POST.get("name", ""))
    messages.success(request, f"Renamed to {identity.name}.")
    return redirect("web:person", identity_id=identity.pk)


@page_view
@require_POST
def person_merge(request, identity_id: int):
    """Merge this person into the chosen one (which keeps its name)."""
    source = gallery.get_identity(owner=request.user, identity_id=identity_id)
    target = _chosen_person(request, request.user)
    merge = merging.merge_identities(owner=request.user, target_id=target.pk, source_id=source.pk)
    messages.success(request, f"Merged {merge.source_name} into {target.name}. Undo it from the merges list.")
    return redirect("web:person", identity_id=target.pk)


@page_view
def person_delete(request, identity_id: int):
    """GET: the confirmation step; POST: delete, purging templates and crops (and faces when asked)."""
    identity = gallery.get_identity(owner=request.user, identity_id=identity_id)
    if request.method != "POST":
        return render(request, "web/person_delete.html", {
            "identity": identity, "stats": reports.identity_statistics(owner=request.user, identity=identity)})
    name = identity.name
    result = gallery.delete_identity(identity=identity, purge_faces=bool(request.POST.get("purge_faces")))
    messages.success(request, f"Deleted {name}: {result['templates_deleted']} template(s), "
                              f"{result['faces_deleted']} face(s) erased, {result['faces_unassigned']} face(s) left unknown, "
                              f"{result['objects_deleted']} stored object(s) removed.")
    return redirect("web:people")


@page_view
@require_POST
def person_enroll(request, identity_id: int):
    identity = gallery.get_identity(owner=request.user, identity_id=identity_id)
    _enroll(request, identity)
    return redirect("web:person", identity_id=identity.pk)


@page_view
@require_GET
def merges(request):
    page = _page(request, Merge.objects.filter(owner=request.user).select_related("target").order_by("-created_at", "-id"), 50)
    return render(request, "web/merges.html", {"page": page})


@page_view
@require_POST
def merge_undo(request, merge_id: int):
    identity = merging.undo_merge(owner=request.user, merge_id=merge_id)
    messages.success(request, f"Undone: {identity.name} is back.")
    return redirect("web:person", identity_id=identity.pk)


# --- unknown faces -------------------------------------------------------------------------------


@page_view
@require_GET
def unknown(request):
    # Catch up on faces no background task has clustered yet (bounded), as the API's list does.
    clustering.cluster_pending(request.user.pk, limit=500)
    page = _page(request, clustering.clusters_for(request.user), CLUSTERS_PER_PAGE)
    samples = selectors.cluster_samples([c.pk for c in page])
    groups = [{"cluster": c, "samples": [{"face": f, "crop_url": thumbnail_url(f.crop_key)} for f in samples[c.pk]]}
              for c in page]
    return render(request, "web/unknown.html", {"page": page, "groups": groups})


@page_view
@require_POST
def cluster_name(request, cluster_id: int):
    """An existing person when the type-ahead picked one (identity_id), else a new person of that name."""
    raw_id = request.POST.get("identity_id", "").strip()
    if raw_id.isascii() and raw_id.isdigit():
        identity = naming.name_cluster(owner=request.user, cluster_id=cluster_id, identity_id=int(raw_id))
    else:
        identity = naming.name_cluster(owner=request.user, cluster_id=cluster_id, name=request.POST.get("person", ""))
    messages.success(request, f"Named the cluster {identity.name}.")
    return redirect("web:person", identity_id=identity.pk)


@page_view
@require_POST
def cluster_remove_face(request, cluster_id: int, face_id: int):
    clustering.remove_from_cluster(owner=request.user, cluster_id=cluster_id, face_id=face_id)
    messages.success(request, "Removed the face from the cluster.")
    return redirect(_back(request, reverse("web:unknown")))


# --- 1:N and 1:1 ---------------------------------------------------------------------------------


@page_view
def search_photo(request):
    result = None
    if request.method == "POST":
        result = search.search(owner=request.user, probe=_one_upload(request, "file"), k=5, all_faces=True)
    return render(request, "web/search.html", {"result": result})


@page_view
def verify(request):
    result = None
    if request.method == "POST":
        result = search.verify(owner=request.user, probe=_one_upload(request, "file_a"), other=_one_upload(request, "file_b"))
    return render(request, "web/verify.html", {"result": result})
