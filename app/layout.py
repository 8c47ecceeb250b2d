"""The page's shared look: title text, theme, CSS and the script in the page head."""

from __future__ import annotations

import gradio as gr

HEADER = (
    "# ACMR zero-shot studio\n"
    "**Name what is in a picture, including classes the model never saw a photo of.** "
    "Upload an image or click an example. *Define a class* describes a new class by its attributes "
    "(colour, pattern, …) and the model recognises it at once; *Latent space* shows how well photos and "
    "descriptions line up."
)
ABOUT = (
    "The model is ACMR (aligned cross-modal representations, AAAI 2022). It maps photos and class "
    "descriptions (lists of attributes) into one shared space. A class it never saw a photo of (*unseen*) "
    "is still recognised when a photo lands near that class's description; so is a class you define."
)
#: Typing into a slider's number box applies only on blur; make Enter apply it too (blur on Enter).
APP_HEAD = """<script>
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches?.("#gamma input[type=number]")) event.target.blur();
});
</script>"""
APP_CSS = """
#predict-status:empty, #define-status:empty, #examples-status:empty { display: none; }
#predict-status .prose, #define-status .prose { font-size: 15px; }
.refusal { color: #b00020; font-weight: 600; }
/* An image outside the model's world: the warning is the headline, the best guess below it is muted. */
.outside-world { font-size: 18px; line-height: 1.4; color: #8a4b00; }
.outside-world strong { font-size: 22px; display: block; }
#top-classes.muted-guess { opacity: 0.5; }
#top-classes.muted-guess h2 { font-size: 16px; font-weight: 400; }
/* "clip", not Gradio's "hidden": it cuts the same but is no scroll container, so the draft's map can stick
   to the top of the screen (position: sticky) while the page scrolls. */
.gradio-container { max-width: 100vw; overflow: clip !important; }

/* Galleries with captions (the Predict examples, the drawn images of a class): the caption goes under its
   picture, whole, instead of over it and cut. */
#examples .grid-container, #class-examples .grid-container { grid-auto-rows: auto !important; height: auto; }
#examples .gallery-item, #class-examples .gallery-item { height: auto; }
#examples .thumbnail-item, #class-examples .thumbnail-item {
  display: flex; flex-direction: column; height: auto; aspect-ratio: auto; overflow: visible;
}
#examples .thumbnail-item img, #class-examples .thumbnail-item img {
  width: 100%; height: auto; aspect-ratio: 1; object-fit: contain;
}
#examples .caption-label, #class-examples .caption-label {
  position: static; max-width: 100%; white-space: normal; overflow: visible; text-overflow: clip;
  background: none; color: var(--body-text-color); font-size: 11px; line-height: 1.25; padding: 2px 0 0;
  text-align: left; border: none; box-shadow: none;
}
#class-examples .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#class-examples .grid-wrap, #class-examples .gallery-container { height: auto !important; min-height: 0; }

/* Uploaded example images: their whole names (wrapped), not an ellipsis and ".png". */
#describe-images td.filename { white-space: normal; width: auto; }
#describe-images td.filename .stem {
  display: inline; overflow: visible; white-space: normal; text-overflow: clip; word-break: break-all;
}
#describe-images td.download { width: 1%; white-space: nowrap; }

/* Tables: a header never breaks inside a word; long cell text wraps at spaces, so no table (and no page)
   is wider than a phone. */
table th, table th * {
  word-break: keep-all; overflow-wrap: normal; hyphens: none;
}
#alignment-table .body-cell, #your-classes .body-cell { white-space: normal; overflow-wrap: break-word; }

/* Define a class: the draft's map stays in view while the editor below it is scrolled. */
#define-row { align-items: stretch; }
#draft-box { position: sticky; top: 0; z-index: 4; background: var(--background-fill-primary); }

@media (max-width: 700px) {
  /* The tab bar fits a phone on one line. */
  #tabs button[role="tab"] { padding: 0 var(--size-2); }
  /* Gradio draws a table's header as a <table> and its rows as <div>s (.virtual-body). */
  table, table *, .virtual-body, .virtual-body * { font-size: 11px !important; }
  table th, table td, table .cell-wrap, .body-cell, .body-cell .cell-wrap {
    padding-left: 3px !important; padding-right: 3px !important;
  }
  #class-examples .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  /* The two columns of Define a class become one list, the draft's map between the attribute list and the
     editor, where it sticks while the editor is scrolled. */
  #define-row { flex-direction: column; }
  #define-editing, #define-side, #draft-box { display: contents; }
  #define-editing > *, #draft-preview { order: 0; }
  #attribute-editor { order: 2; }
  #draft-plot { order: 1; position: sticky; top: 0; z-index: 4; background: var(--background-fill-primary); }
  #define-side > *:not(#draft-box) { order: 3; }
}
"""


def app_theme() -> gr.themes.Base:
    """Gradio's default look with the system fonts: the bundled web font lacks some bold capitals, which then
    render in a thin fallback glyph (the "A" of the title); system fonts are also what works offline."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )
