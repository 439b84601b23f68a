"""Joint (cumulative) training: at experience i, train on all data of experiences 0..i.

The upper bound of the table: nothing is forgotten because nothing is withheld.
"""
from clpeft.strategies.base import CLStrategy, register


@register("joint")
class Joint(CLStrategy):
    trains = "pet"

    def setup(self):
        self.seen = None  # the data of every experience so far

    def training_data(self, dataset):
        self.seen = dataset if self.seen is None else self.seen.concat(dataset)
        return self.seen

    def resume_state(self) -> dict:
        return {**super().resume_state(), "experiences_seen": self.experience_index + 1}

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        super().load_resume_state(state, model_state, train_stream)
        for experience in train_stream[:state["experiences_seen"]]:
            self.training_data(experience.dataset)
