"""kdlib's docstrings are plain text, written to be read with help() or in an editor: formulas and
tables sit on lines indented deeper than the paragraph above them. For the API page (book/api.md)
each such block becomes a literal block, shown as written, instead of reStructuredText's guesses
(block quotes, definition lists) and their warnings."""
import re

# lines whose deeper-indented followers are reStructuredText's own: a directive, a field, a list item
MARKUP = re.compile(r"(\.\.\s|:\w[^:]*:|[-*+]\s|\d+[.)]\s)")


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def literal_blocks(app, what, name, obj, options, lines) -> None:
    out = []
    head = None  # the indentation of the paragraph whose literal block is being copied, if inside one
    for line in lines:
        if head is not None and line.strip() and indent(line) <= head:
            head = None  # the block ends where a line comes back to its paragraph's indentation
            if out and out[-1].strip():
                out.append("")  # reStructuredText wants a blank line after a literal block
        if head is None and line.strip():
            text = [i for i, prev in enumerate(out) if prev.strip()]
            if text and indent(line) > indent(out[text[-1]]) and not MARKUP.match(out[text[-1]].lstrip()):
                above = out[text[-1]].rstrip()
                if not above.endswith("::"):
                    out[text[-1]] = above + (":" if above.endswith(":") else " ::")
                del out[text[-1] + 1:]  # one blank line between the paragraph and its block
                out.append("")
                head = indent(above)
        out.append(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", literal_blocks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
