"""Names on the wire that mark how a request was answered, shared by the router and the REST edge."""

# Response parameter (V2) and HTTP header naming what answered instead of the model while its circuit
# was open: the fallback model's name, or "rule".
FALLBACK_PARAMETER = "aisf_fallback"
FALLBACK_HEADER = "x-aisf-fallback"
