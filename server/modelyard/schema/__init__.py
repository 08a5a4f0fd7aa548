"""The gateway's internal request/response model: OpenAI's JSON shapes as msgspec structs.

Every surface (the OpenAI facade, the typed gRPC API) converts into these, and every provider
adapter converts from and to them.
"""
