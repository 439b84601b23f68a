"""Joint (cumulative) training: at experience i, train on all data of experiences 0..i.

The upper bound of the table: nothing is forgotten because nothing is withheld.
"""
from clpeft.strategies.base import CLStrategy, register


@register("joint")
class Joint(CLStrategy):

    def setup(self):
        self.seen = None  # the data of every experience so far

    def training_data(self, dataset):
        self.seen = dataset if self.seen is None else self.seen.concat(dataset)
        return self.seen

    def after_resume(self, train_stream) -> None:
        for experience in train_stream[:self.experience_index + 1]:  # the data seen so far, as it accumulated
            self.training_data(experience.dataset)
