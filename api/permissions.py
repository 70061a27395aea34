"""Role-based permission classes for the REST API (used by the labelling and benchmark endpoints).

Every role is authenticated first: anonymous requests get 401/403 from DRF, never a redirect.
"""
from rest_framework.permissions import BasePermission


class IsAdminRole(BasePermission):
    """Admins (role admin, or superusers): import datasets, manage users, launch benchmarks."""

    message = "This needs the admin role."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.is_admin_role)


class IsReviewerRole(BasePermission):
    """Reviewers and admins: see every label, settle disagreements, read agreement statistics."""

    message = "This needs the reviewer or admin role."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.is_reviewer_role)


class IsLabelOwnerOrReviewer(BasePermission):
    """Object level: annotators touch only their own labels; reviewers/admins may read all.

    Changing someone else's label is refused to everyone (reviewers decide final labels instead).
    """

    def has_object_permission(self, request, view, obj):
        if obj.annotator_id == request.user.pk:
            return True
        return request.method in ("GET", "HEAD", "OPTIONS") and request.user.is_reviewer_role


class ReadAnyWriteAdmin(BasePermission):
    """Any logged-in user reads runs; only admins launch, cancel or retry."""

    message = "Launching, cancelling and retrying benchmarks needs the admin role."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in ("GET", "HEAD", "OPTIONS") or user.is_admin_role


class ReadAnyWriteReviewer(BasePermission):
    """Any logged-in user reads (the defect book); only reviewers and admins change it."""

    message = "Pinning to and unpinning from the defect book needs the reviewer or admin role."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in ("GET", "HEAD", "OPTIONS") or user.is_reviewer_role
