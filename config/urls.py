from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from annotator import views as annotator_views
from api.root_views import token_page

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/api-token/", token_page, name="api-token-page"),
    path("api/", include("api.urls")),
    path("benchmarks/", include("inference.urls")),
    re_path(
        r"^files/images/(?P<pk>\d+)/(?P<kind>image|mask)$",
        annotator_views.image_file,
        name="image-file",
    ),
    path("", include("annotator.urls")),
]

# A URL under /api/ that nothing answers (/api/labels/1.5/) gets a JSON 404 like every API error.
handler404 = "api.root_views.page_not_found"
# A page's bad query or form value: a page naming the field (annotator.forms.InvalidInput).
handler400 = "api.root_views.bad_request"
