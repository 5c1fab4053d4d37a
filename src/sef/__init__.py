"""SEF, the Smart Energy Framework: aggregate control of distributed energy resources."""

__version__ = "0.1.0"
