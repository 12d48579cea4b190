"""pytest configuration shared by the unit tests and the nbval run over book/."""
import os

# Chapters run in the quick profile under test unless the caller asks for another one.
# Set here, before nbval starts any kernel, so every chapter inherits it.
os.environ.setdefault("KDLIB_PROFILE", "smoke")
