"""The codec's one error type."""


class CodecError(ValueError):
    """Bytes that are not a valid encoding of a vfio-user message.

    ``message`` names the message (e.g. ``"DMA_MAP request"``), ``field`` the
    field that is wrong, ``detail`` what is wrong with it.
    """

    def __init__(self, message: str, field: str, detail: str):
        self.message = message
        self.field = field
        self.detail = detail
        super().__init__(f"{message}: {field}: {detail}")
