"""Asking before something that cannot be undone: the buttons say what they do.

A confirmation's buttons name the action ("Delete", "Remove", "Make admin") and "Cancel", as
desktop guidelines ask (GNOME, KDE and macOS alike): "Yes"/"No" makes the user read the question
again to know which one deletes. Cancel is the default and the Escape button, so Enter or Esc
on a question asked by surprise changes nothing. Changes not saved yet, on closing: Save,
Discard or Cancel (``ask_to_save``), Cancel the default here too.
"""
from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QMessageBox, QWidget


class Confirmation(QMessageBox):
    """The question, an action button and Cancel (the default)."""

    def __init__(self, parent: QWidget | None, title: str, text: str, action: str,
                 icon: QMessageBox.Icon = QMessageBox.Icon.Question, option: str | None = None):
        """``option``: a check box under the question, checked at first (``option_checked``)."""
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setText(text)
        self.setIcon(icon)
        self.action_button = self.addButton(action, QMessageBox.ButtonRole.AcceptRole)
        self.cancel_button = self.addButton(QMessageBox.StandardButton.Cancel)
        self.setDefaultButton(self.cancel_button)
        self.setEscapeButton(self.cancel_button)
        # kept here too: a check box only the C++ box held was deleted with its Python name
        self.option_box: QCheckBox | None = None
        if option is not None:
            self.option_box = QCheckBox(option, self)
            self.option_box.setChecked(True)
            self.setCheckBox(self.option_box)

    def confirmed(self) -> bool:
        """Whether the action button was the one pressed (closing the box is Cancel)."""
        return self.clickedButton() is self.action_button

    def option_checked(self) -> bool:
        return self.option_box is not None and self.option_box.isChecked()


class SaveQuestion(Confirmation):
    """Changes not saved: Save, Discard and Cancel (the default: back to the changes)."""

    def __init__(self, parent: QWidget | None, title: str, text: str):
        super().__init__(parent, title, text, "Save")
        self.discard_button = self.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)

    def answer(self) -> str:
        """"save", "discard" or "cancel" (closing the box is Cancel)."""
        clicked = self.clickedButton()
        return "save" if clicked is self.action_button else \
            "discard" if clicked is self.discard_button else "cancel"


def ask_to_save(parent: QWidget | None, title: str, text: str) -> str:
    """Ask ``text`` about changes not saved: "save", "discard" or "cancel"."""
    box = SaveQuestion(parent, title, text)
    box.exec()
    return box.answer()


def confirm(parent: QWidget | None, title: str, text: str, action: str,
            icon: QMessageBox.Icon = QMessageBox.Icon.Question) -> bool:
    """Ask ``text``; True only when the user pressed ``action``."""
    box = Confirmation(parent, title, text, action, icon)
    box.exec()
    return box.confirmed()


def confirm_with_option(parent: QWidget | None, title: str, text: str, action: str,
                        option: str) -> tuple[bool, bool]:
    """Ask ``text`` with the check box ``option`` (checked at first): (whether the user
    pressed ``action``, whether the box was checked)."""
    box = Confirmation(parent, title, text, action, option=option)
    box.exec()
    return box.confirmed(), box.option_checked()
