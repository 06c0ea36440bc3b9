// 04-feature-extraction.c: Chapter 4, transfer learning by feature extraction.
// Take ResNet34 pretrained on ImageNet, freeze every backbone weight, replace its 1000-way fc by a
// new 512 -> 37 linear layer and train only that layer on Oxford-IIIT Pet (trainval split), with
// the tutorial's recipe: Adam lr 1e-3, CrossEntropyLoss(reduction='sum'), ReduceLROnPlateau
// (factor 0.1, patience 2) stepped on the validation loss (test split), 30 epochs, batch 32.
//
// Two variants:
// - default ("cached-eval-bn"), a true feature extractor: BatchNorm uses its running statistics,
//   so the backbone is a fixed function and each image's 512 features never change. They are
//   computed once (one pass over both splits, decoding on all cores), cached on disk, and the
//   head trains on them: the same numbers as recomputing the backbone every epoch, far faster.
// - --bn-train ("bn-train"), the tutorial's PyTorch code exactly: `requires_grad = False` freezes
//   the weights, but under model.train() BatchNorm normalizes with batch statistics and updates
//   its running statistics, so the "frozen" backbone drifts while the head trains. The backbone
//   runs in train mode on every training batch, nothing is cached; validation uses eval mode.
//
// Outputs (under --results, default results/): 04-feature-extraction.{csv,json,pth,
// predictions.csv} (04-feature-extraction-bn-train.* for the variant) and a checkpoint (.ckpt)
// after every epoch for --resume.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "experiment/experiment.h"
#include "data/preprocess.h"

static const char ABOUT[] =
    "04-feature-extraction: train a new 37-way head on a frozen ImageNet ResNet34 (the tutorial's\n"
    "feature extraction). By default BatchNorm stays in eval mode and the backbone's features are\n"
    "computed once and cached; --bn-train reproduces the tutorial's model.train() behaviour.";

// The features of the frozen backbone come from exp_feature_cache (experiment/exp_data.c):
// computed once per split, weights and device, then read from disk.

// One pass over the validation split in eval mode; keeps the logits for the predictions file.
static void validate(Experiment *x, Source *val, double *loss, int *correct) {
    *loss = 0;
    *correct = 0;
    XBatch b;
    source_start(val, -1, x->a.bn_train ? "validate" : NULL);
    while (source_next(val, &b)) {
        // region: validate
        if (x->a.bn_train) resnet34_forward(x->model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/0);
        else resnet34_forward_head(x->model, b.x, b.n);
        int c = 0;
        *loss += resnet34_loss(x->model, b.label, /*mean=*/0, /*backward=*/0, 1.0f, &c);
        *correct += c;
        // endregion
        exp_keep_logits(x, &b);
    }
}

int main(int argc, char **argv) {
    ExpArgs a = {.root = "data/oxford-iiit-pet",
                 .weights = "data/weights/resnet34-b627a593.pth",
                 .device = "auto",
                 .results = "results",
                 .epochs = 30,
                 .batch_size = 32,
                 .lr = 1e-3f,
                 .seed = 0};
    exp_parse_args(&a, argc, argv, ABOUT, EXP_OPT_BN_TRAIN);
    Experiment x;
    exp_setup(&x, &a, "04-feature-extraction",
              a.bn_train ? "04-feature-extraction-bn-train" : "04-feature-extraction",
              a.bn_train ? "bn-train" : "cached-eval-bn");
    ResNet34 *model = x.model;

    // region: freeze
    // `for param in model.parameters(): param.requires_grad = False`, then the new fc (made in
    // exp_setup) is the only trainable layer: no gradient is computed below it.
    resnet34_freeze_backbone(model, 1);
    // endregion

    // The inputs of the head: cached features, or (--bn-train) the images themselves, decoded
    // once into a uint8 crop cache so that later epochs do not decode JPEGs again.
    Source *train, *val;
    Cache crops[2];
    float *features[2] = {NULL, NULL};
    uint8_t *ok[2] = {NULL, NULL};
    if (a.bn_train) {
        for (int s = 0; s < 2; s++) exp_image_cache(&x, s, &crops[s]);
        train = source_images(&x, 0, &crops[0]);
        val = source_images(&x, 1, &crops[1]);
    } else {
        for (int s = 0; s < 2; s++) features[s] = exp_feature_cache(&x, s, &ok[s]);
        train = source_features(&x, 0, features[0], ok[0]);
        val = source_features(&x, 1, features[1], ok[1]);
    }
    if (a.epochs == 0) {
        printf("--epochs 0: the caches are ready; nothing to train\n");
        goto done;
    }

    // region: optimizer
    Adam optimizer;               // torch.optim.Adam(model.parameters(), lr=1e-3)
    adam_init(&optimizer, a.lr);
    Plateau scheduler;            // ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    plateau_init(&scheduler, 0.1, 2);
    GradScaler scaler;            // torch.cuda.amp.GradScaler(), a no-op in fp32
    scaler_init(&scaler, x.precision == PREC_FP16);
    // endregion
    int start = exp_resume(&x, &optimizer, &scheduler, &scaler);

    const int n_train = source_count(train), n_val = source_count(val);
    for (int epoch = start; epoch < a.epochs; epoch++) {
        double t0 = now_seconds();
        float lr = optimizer.lr;
        double train_loss = 0;
        int batches = 0;
        const long steps_before = optimizer.step; // Adam steps taken (not skipped by the scaler)
        XBatch b;
        source_start(train, epoch, a.bn_train ? "train" : NULL); // shuffled with the seed
        while (source_next(train, &b)) {
            // region: training-step
            if (a.bn_train) // model.train(): batch statistics, running statistics drift
                resnet34_forward(model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/1);
            else            // the frozen backbone already ran: only the head
                resnet34_forward_head(model, b.x, b.n);
            // loss(reduction='sum'); scaler.scale(loss).backward(); scaler.step(); scaler.update()
            train_loss += train_step(model, &optimizer, &scaler, b.label);
            // endregion
            batches++;
        }
        double val_loss;
        int correct;
        validate(&x, val, &val_loss, &correct);
        ExpRow row = {train_loss / n_train, val_loss / n_val, (double)correct / n_val, lr,
                      now_seconds() - t0};
        exp_log_epoch(&x, epoch, row);
        // A non-finite loss (fp32), or an fp16 epoch whose every step overflowed, stops the run
        // here: exit status 3, the JSON marked "diverged", no final model.
        exp_check_divergence(&x, epoch, batches, optimizer.step - steps_before);
        // region: scheduler-step
        plateau_step(&scheduler, val_loss / n_val, &optimizer.lr, /*verbose=*/1);
        // endregion
        exp_checkpoint(&x, &optimizer, &scheduler, &scaler);
    }
    if (start == a.epochs) { // resumed a finished run: evaluate the final model again
        double val_loss;
        int correct;
        validate(&x, val, &val_loss, &correct);
    }
    exp_finish(&x);
done:
    source_free(train);
    source_free(val);
    for (int s = 0; s < 2; s++) {
        if (a.bn_train) cache_close(&crops[s]);
        free(features[s]);
        free(ok[s]);
    }
    exp_close(&x);
    return 0;
}
