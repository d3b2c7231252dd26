"""Receipts: the document model, its pure renderers and the printer adapters, one module each."""
