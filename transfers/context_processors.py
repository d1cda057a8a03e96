"""Template context for every page."""


def nav(request):
    """The section of the site a page belongs to, for the navigation bar."""
    section = request.path.strip("/").split("/", 1)[0]
    return {"nav": section or "overview"}
