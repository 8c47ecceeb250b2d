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
#predict-status:empty, #define-status:empty { display: none; }
#predict-status .prose, #define-status .prose { font-size: 15px; }
.refusal { color: #b00020; font-weight: 600; }
/* An image outside the model's world: the warning is the headline, the best guess below it is muted. */
.outside-world { font-size: 18px; line-height: 1.4; color: #8a4b00; }
.outside-world strong { font-size: 22px; display: block; }
#top-classes.muted-guess { opacity: 0.5; }
#top-classes.muted-guess h2 { font-size: 16px; font-weight: 400; }
#examples .caption-label { font-size: 11px; white-space: normal; line-height: 1.2; }
/* Long class names wrap at spaces instead of pushing the tables (and the page) wider than a phone. */
#alignment-table td, #alignment-table th, #your-classes td { white-space: normal; overflow-wrap: break-word; }
.gradio-container { max-width: 100vw; }
"""


def app_theme() -> gr.themes.Base:
    """Gradio's default look with the system fonts: the bundled web font lacks some bold capitals, which then
    render in a thin fallback glyph (the "A" of the title); system fonts are also what works offline."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )
