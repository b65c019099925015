# ruff: noqa: E501, E711, E721, SIM201, RUF017  (the official code as written, kept on purpose)
"""Reference: a line-by-line transcription of the official VQA helper class (``vqaTools/vqa.py``).

Source: GT-Vision-Lab/VQA, ``PythonHelperTools/vqaTools/vqa.py`` on master (last commit 5e7e7df; the file is
identical at both ``vqaEval.py`` revisions, 458a8b2 and a013f00). Changes from the original, all at the
edges: the constructor and ``loadRes`` take already-parsed JSON instead of file names (no ``json.load``),
the ``print`` statements are dropped, and ``info`` / ``getImgIds`` / ``loadQA`` / ``showQA`` (not used by
the evaluation) are left out. Everything the evaluation depends on is kept as written: the indexes, the
question-id order, ``loadRes``'s asserts and its in-place additions to the result records.
Independent of ``vlpeft``: do not import from there.
"""

from __future__ import annotations

import copy


class OfficialVQA:
    """``VQA`` of vqaTools/vqa.py."""

    def __init__(self, annotation_file=None, question_file=None):
        # load dataset
        self.dataset = {}
        self.questions = {}
        self.qa = {}
        self.qqa = {}
        self.imgToQA = {}
        if not annotation_file == None and not question_file == None:
            dataset = annotation_file  # already parsed (the original json.loads the file here)
            questions = question_file
            self.dataset = dataset
            self.questions = questions
            self.createIndex()

    def createIndex(self):
        # create index
        imgToQA = {ann["image_id"]: [] for ann in self.dataset["annotations"]}
        qa = {ann["question_id"]: [] for ann in self.dataset["annotations"]}
        qqa = {ann["question_id"]: [] for ann in self.dataset["annotations"]}
        for ann in self.dataset["annotations"]:
            imgToQA[ann["image_id"]] += [ann]
            qa[ann["question_id"]] = ann
        for ques in self.questions["questions"]:
            qqa[ques["question_id"]] = ques

        # create class members
        self.qa = qa
        self.qqa = qqa
        self.imgToQA = imgToQA

    def getQuesIds(self, imgIds=[], quesTypes=[], ansTypes=[]):  # noqa: B006  (the official defaults)
        imgIds = imgIds if type(imgIds) == list else [imgIds]
        quesTypes = quesTypes if type(quesTypes) == list else [quesTypes]
        ansTypes = ansTypes if type(ansTypes) == list else [ansTypes]

        if len(imgIds) == len(quesTypes) == len(ansTypes) == 0:
            anns = self.dataset["annotations"]
        else:
            if not len(imgIds) == 0:
                anns = sum([self.imgToQA[imgId] for imgId in imgIds if imgId in self.imgToQA], [])
            else:
                anns = self.dataset["annotations"]
            anns = anns if len(quesTypes) == 0 else [ann for ann in anns if ann["question_type"] in quesTypes]
            anns = anns if len(ansTypes) == 0 else [ann for ann in anns if ann["answer_type"] in ansTypes]
        ids = [ann["question_id"] for ann in anns]
        return ids

    def loadRes(self, resFile, quesFile):
        """``resFile`` / ``quesFile``: the parsed results list and questions file (the original loads them)."""
        res = OfficialVQA()
        res.questions = quesFile
        res.dataset["info"] = copy.deepcopy(self.questions["info"])
        res.dataset["task_type"] = copy.deepcopy(self.questions["task_type"])
        res.dataset["data_type"] = copy.deepcopy(self.questions["data_type"])
        res.dataset["data_subtype"] = copy.deepcopy(self.questions["data_subtype"])
        res.dataset["license"] = copy.deepcopy(self.questions["license"])

        anns = resFile
        assert type(anns) == list, "results is not an array of objects"
        annsQuesIds = [ann["question_id"] for ann in anns]
        assert set(annsQuesIds) == set(self.getQuesIds()), (
            "Results do not correspond to current VQA set. Either the results do not have predictions for all question ids in annotation file or there is atleast one question id that does not belong to the question ids in the annotation file."
        )
        for ann in anns:
            quesId = ann["question_id"]
            if res.dataset["task_type"] == "Multiple Choice":
                assert ann["answer"] in self.qqa[quesId]["multiple_choices"], (
                    "predicted answer is not one of the multiple choices"
                )
            qaAnn = self.qa[quesId]
            ann["image_id"] = qaAnn["image_id"]
            ann["question_type"] = qaAnn["question_type"]
            ann["answer_type"] = qaAnn["answer_type"]

        res.dataset["annotations"] = anns
        res.createIndex()
        return res


def run_official(eval_class, questions: dict, annotations: dict, results: list, n: int = 2):
    """Run a transcribed ``VQAEval`` as the official demo script does: VQA, loadRes, VQAEval, evaluate.

    ``annotations`` and ``results`` are deep-copied first because the official code mutates both.
    """
    vqa = OfficialVQA(copy.deepcopy(annotations), questions)
    vqa_res = vqa.loadRes(copy.deepcopy(results), questions)
    ev = eval_class(vqa, vqa_res, n=n)
    ev.evaluate()
    return ev
