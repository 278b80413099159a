"""What schemathesis needs to know of orderlog's contract beyond JSON Schema.

``format: printable`` (see ``api.http.openapi``) is Python's ``str.isprintable`` and
not blank: valid values are drawn from exactly that set, so every positive
example is one the server must accept.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from orderlog.domain.order import is_blank

NOT_PRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
PRINTABLE = st.text(
    st.characters(exclude_categories=NOT_PRINTABLE) | st.just(" "), min_size=1, max_size=64
).filter(lambda text: text.isprintable() and not is_blank(text))

schemathesis.openapi.format("printable", PRINTABLE)
