"""The profile page: a person's time zone."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from profiles.middleware import SESSION_KEY
from profiles.models import Profile, zone_names


class ProfileForm(forms.ModelForm):
    time_zone = forms.ChoiceField(choices=[], help_text="Pages and emails show times in it.")

    class Meta:
        model = Profile
        fields = ["time_zone"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = [(z, z) for z in zone_names()]


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    current, _ = Profile.objects.get_or_create(user=request.user)
    form = ProfileForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        form.save()
        request.session[SESSION_KEY] = form.instance.time_zone
        messages.success(request, f"Times are now shown in {form.instance.time_zone}.")
        return redirect("profile")
    return render(request, "profiles/profile.html", {"form": form})
