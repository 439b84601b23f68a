"""Joint (cumulative) training: at experience i, train on all data of experiences 0..i.

The upper bound of the table: nothing is forgotten because nothing is withheld.
"""
from clpeft.strategies.base import CLStrategy, register


@register("joint")
class Joint(CLStrategy):
    trains = "pet"

    def configure(self, **options):
        super().configure(**options)
        self._seen = None

    def train_dataset_adaptation(self, **kwargs):
        current = self.experience.dataset
        self._seen = current if self._seen is None else self._seen.concat(current)
        self.adapted_dataset = self._seen.train()
