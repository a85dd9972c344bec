"""hivtp_shapes for lmms-eval: one image and one question per document, scored by exact match."""

def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    """exact_match over every question, and per question kind (each kind's mean covers its own questions)."""
    right = float(results[0].strip().lower() == doc["answer"])
    return {"exact_match": right, doc["kind"]: right}
