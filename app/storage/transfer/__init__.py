"""Export and import of conversations.

``export`` writes conversations as lossless JSON (``outpost_json``), Markdown or HTML
(``readable``); ``importer`` reads Outpost JSON or ChatGPT's ``conversations.json``
(``chatgpt``) a conversation at a time (``json_stream``), checks all of it (``shape``) and
writes it in one transaction. ``records`` knows the database's columns, which both directions
share.
"""
