"""The pii role: personal data found and redacted in Korean and English text (aisf.pii.v1.PiiService)."""
