"""tvts-engine: pre-train video encoders that understand time (TVTS / TVTSv2)."""
__version__ = "0.1.0"
