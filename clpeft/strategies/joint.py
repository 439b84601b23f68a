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

    def resume_state(self) -> dict:
        return {**super().resume_state(), "experiences_seen": self.clock.train_exp_counter}

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        super().load_resume_state(state, model_state, train_stream)
        for experience in train_stream[:state["experiences_seen"]]:
            current = experience.dataset
            self._seen = current if self._seen is None else self._seen.concat(current)
