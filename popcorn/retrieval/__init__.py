"""f's inputs: the MicroLens corpus, its title embeddings, category routing and the FAISS reference index.

corpus -> embed -> routing -> index: `index.Retriever` (and `QuickRetriever` for a first plan) turns a query into a
`types.Retrieval` (matched categories, why, K popular and unpopular references).
"""
